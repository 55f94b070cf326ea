"""Validates OCSF events against the OCSF 1.3.0 schema with pydantic-ocsf's
models (pinned in scripts/test-requirements.txt): reads a JSON array of
events on standard input, prints one line per event ("ok" or the problems),
exits 1 if any event is invalid."""

import json
import sys

from ocsf.v1_3_0.events import AccountChange, ApiActivity, Authentication

CLASSES = {6003: ApiActivity, 3002: Authentication, 3001: AccountChange}

failed = False
for event in json.load(sys.stdin):
    model = CLASSES.get(event.get("class_uid"))
    if model is None:
        print(f"class_uid {event.get('class_uid')!r} is not one this test knows")
        failed = True
        continue
    try:
        model.model_validate(event)
        print("ok")
    except Exception as error:  # pydantic's ValidationError, with every problem
        print(f"{model.__name__}: {error}".replace("\n", " | "))
        failed = True
sys.exit(1 if failed else 0)
