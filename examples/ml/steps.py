"""ML pipeline steps: split digits -> train two models -> evaluate -> report."""

from __future__ import annotations

import json
import pickle

import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeorch_worker.sdk import StepContext


def split_dataset(ctx: StepContext) -> None:
    digits = load_digits()  # shipped inside scikit-learn: nothing is downloaded
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data,
        digits.target,
        test_size=ctx.params["test_fraction"],
        random_state=ctx.params["seed"],
        stratify=digits.target,
    )
    np.savez_compressed(ctx.output("train.npz").open("wb"), x=x_train, y=y_train)
    np.savez_compressed(ctx.output("test.npz").open("wb"), x=x_test, y=y_test)
    print(f"split {len(digits.target)} images: {len(y_train)} train, {len(y_test)} test")


def train_model(ctx: StepContext) -> None:
    data = np.load(ctx.input("split/train.npz"))
    kind = ctx.params["model"]
    if kind == "logistic_regression":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=ctx.params["max_iter"]))
    elif kind == "random_forest":
        model = RandomForestClassifier(
            n_estimators=ctx.params["n_estimators"], random_state=ctx.params["seed"]
        )
    else:
        raise ValueError(f"unknown model {kind!r}")
    model.fit(data["x"], data["y"])
    ctx.output("model.pkl").write_bytes(pickle.dumps({"name": kind, "model": model}))
    print(f"trained {kind} on {len(data['y'])} images")


def evaluate_models(ctx: StepContext) -> None:
    test = np.load(ctx.input("split/test.npz"))
    metrics = {}
    for ref in ("train-logreg/model.pkl", "train-forest/model.pkl"):
        saved = pickle.loads(ctx.input(ref).read_bytes())
        predicted = saved["model"].predict(test["x"])
        metrics[saved["name"]] = {
            "accuracy": round(float(accuracy_score(test["y"], predicted)), 4),
            "macro_f1": round(float(f1_score(test["y"], predicted, average="macro")), 4),
            "test_images": len(test["y"]),
        }
        print(f"{saved['name']}: accuracy {metrics[saved['name']]['accuracy']}")
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))


def write_report(ctx: StepContext) -> None:
    metrics = json.loads(ctx.input("evaluate/metrics.json").read_text())
    best = max(
        sorted(metrics), key=lambda name: (metrics[name]["accuracy"], metrics[name]["macro_f1"])
    )
    lines = ["# Digits: model comparison", "", "| model | accuracy | macro F1 |", "|---|---|---|"]
    for name, m in sorted(metrics.items()):
        lines.append(f"| {name} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |")
    lines += ["", f"Better model: **{best}** (accuracy {metrics[best]['accuracy']:.4f})."]
    ctx.output("report.md").write_text("\n".join(lines) + "\n")
    print(f"better model: {best}")
