from __future__ import annotations

import json
import logging

from pipeorch import logs


def test_json_logs_are_one_object_per_line_with_the_process_name(capsys):
    logs.configure("cp-1", "INFO", json=True)
    logging.getLogger("pipeorch.test").warning("worker %s marked offline", "aws-1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["message"] == "worker aws-1 marked offline"
    assert record["level"] == "WARNING"
    assert record["proc"] == "cp-1"
    assert record["name"] == "pipeorch.test"


def test_plain_logs_name_the_process(capsys):
    logs.configure("worker/aws", "INFO", json=False)
    logging.getLogger("pipeorch.test").info("hello")
    assert "[worker/aws] hello" in capsys.readouterr().err
