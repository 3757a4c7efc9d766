# The worker of one Python user function node (tap's embedded engine runs it with python3 -u).
#
# Protocol, one JSON object per line. The engine writes the function first:
#   {"script": "...", "name": "node name"}   -> {"ready": true} | {"error": "traceback"}
# then batches:
#   {"batch": [[op, table, record], ...]}    -> {"ok": [record or null, ...]} | {"error": "traceback"}
# Values that JSON cannot hold travel tagged: {"$decimal": "1.50"}, {"$bytes": "<base64>"},
# {"$date": "2024-01-31"}, {"$ts": "2024-01-31T10:00:00.123456"} (no zone),
# {"$tstz": "2024-01-31T10:00:00.123456+00:00"}; a dict with one "$..." key of another name is
# escaped as {"$obj": {...}}. The function sees Decimal, bytes, date and datetime.
#
# Whatever the function prints goes to stderr: stdout carries the protocol only.
import base64
import datetime
import decimal
import json
import os
import sys
import traceback

_proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr

_TAGS = ("$decimal", "$bytes", "$date", "$ts", "$tstz", "$obj")

# The official client wraps a function body under TapData's (Jython) imports, some of which
# CPython lacks (urllib2) or a machine may not have (yaml, requests): those three lines import
# what there is, on three lines, so a traceback's line numbers stay the script's.
_OFFICIAL = ("import json, random, time, datetime, uuid, types, yaml\n"
             "import urllib, urllib2, requests\n"
             "import math, hashlib, base64\n")
_GUARDED = ('_tap_mods = "json random time datetime uuid types yaml urllib urllib2 requests math hashlib base64".split()\n'
            'exec("for _m in _tap_mods:\\n try:\\n  globals()[_m] = __import__(_m)\\n except ImportError:\\n  pass")\n'
            'del _tap_mods\n')


def _decode(v):
    if isinstance(v, dict):
        if len(v) == 1:
            (k, x), = v.items()
            if k == "$decimal":
                return decimal.Decimal(x)
            if k == "$bytes":
                return base64.b64decode(x)
            if k == "$date":
                return datetime.date.fromisoformat(x)
            if k == "$ts" or k == "$tstz":
                return datetime.datetime.fromisoformat(x)
            if k == "$obj":
                return {kk: _decode(vv) for kk, vv in x.items()}
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def _encode(v, path):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise TypeError(f"field {path}: {v} is not a number a database can hold")
        return v
    if isinstance(v, decimal.Decimal):
        if not v.is_finite():
            raise TypeError(f"field {path}: {v} is not a number a database can hold")
        return {"$decimal": format(v, "f")}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            return {"$ts": v.isoformat()}
        return {"$tstz": v.astimezone(datetime.timezone.utc).isoformat()}
    if isinstance(v, datetime.date):
        return {"$date": v.isoformat()}
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"field {path}: key {k!r} is not a string")
            out[k] = _encode(x, f"{path}.{k}")
        if len(out) == 1 and next(iter(out)) in _TAGS:
            return {"$obj": out}
        return out
    if isinstance(v, (list, tuple)):
        return [_encode(x, f"{path}[{i}]") for i, x in enumerate(v)]
    raise TypeError(f"field {path}: a {type(v).__name__} is not a value tap can write "
                    "(use str, int, float, bool, None, Decimal, bytes, date, datetime, dict or list)")


def _reply(obj):
    _proto.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
    _proto.write("\n")
    _proto.flush()


def _error():
    # The traceback from the user's code on: tap's own frames are noise.
    etype, value, tb = sys.exc_info()
    frames = traceback.extract_tb(tb)
    user = [f for f in frames if f.filename == "<udf>"] or frames
    lines = ["Traceback (most recent call last):\n"] + traceback.format_list(user)
    lines += traceback.format_exception_only(etype, value)
    return "".join(lines).rstrip()


def main():
    process = None
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError as e:
            _reply({"error": f"tap worker: not a message: {e}"})
            continue
        if "script" in msg:
            scope = {"__name__": "__udf__"}
            script = msg["script"]
            if script.startswith(_OFFICIAL):
                script = _GUARDED + script[len(_OFFICIAL):]
            try:
                exec(compile(script, "<udf>", "exec"), scope)
                process = scope.get("process")
                if not callable(process):
                    raise NameError("the script defines no function process(record, context)")
                _reply({"ready": True})
            except BaseException:
                _reply({"error": _error()})
            continue
        out = []
        try:
            for op, table, record in msg["batch"]:
                rec = _decode(record)
                result = process(rec, {"op": op, "tableName": table})
                if result is None:
                    out.append(None)
                elif isinstance(result, dict):
                    out.append(_encode(result, "record"))
                else:
                    raise TypeError(f"process returned a {type(result).__name__}: return the record (a dict) or None")
            _reply({"ok": out})
        except BaseException:
            _reply({"error": _error()})


main()
