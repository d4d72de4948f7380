from __future__ import annotations

import json
import logging

from service.logs import JsonFormatter


def test_log_lines_are_json_with_the_job_id():
    record = logging.LogRecord("adapruner.worker", logging.INFO, __file__, 1, 'job "%s" attempt %d', ("a\\b", 2), None)
    record.job_id = "abc"
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["msg"] == 'job "a\\b" attempt 2' and entry["job_id"] == "abc" and entry["level"] == "INFO"
