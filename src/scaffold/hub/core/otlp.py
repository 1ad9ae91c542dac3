"""OTLP/HTTP JSON, as Claude Code exports it, read into the records the hub keeps: one `ApiRequest`
per `claude_code.api_request` log record, one `MetricPoint` per data point of the cost and token
metrics. Everything else in an export is counted and let go.

Shapes are checked strictly and a wrong one names its path (`resourceLogs[0].scopeLogs[1]...`):
the whole export is refused, so nothing of it is half-stored. Values follow the protobuf JSON
mapping OTLP uses: an int64 is a JSON number or a decimal string, an absent repeated field is an
empty one. Only attributes this module reads are converted; the rest are checked for shape only.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scaffold.errors import MalformedJSON, PayloadTooLarge, UnsupportedMediaType

MAX_OTLP_BYTES = 4 * 1024 * 1024
"""One export, compressed or not: the body as sent and, when gzipped, what it inflates to."""
MAX_OTLP_ITEMS = 100_000
"""Log records, or metric data points, in one export."""
MAX_SESSION_ID = 128
MAX_COUNT = 10**12
"""A request's tokens, or its cost in micro-dollars ($1M): far above any real request, and low
enough that the sums of millions of rows stay inside SQLite's int64."""

API_REQUEST = "claude_code.api_request"
METRICS = {"claude_code.cost.usage": "cost", "claude_code.token.usage": "tokens"}
_TEMPORALITY: dict[int | str, bool] = {
    1: False,
    2: True,
    "AGGREGATION_TEMPORALITY_DELTA": False,
    "AGGREGATION_TEMPORALITY_CUMULATIVE": True,
}
_REQUEST_KEYS = (
    "session.id",
    "event.sequence",
    "event.timestamp",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cost_usd_micros",
    "cost_usd",
    "duration_ms",
)
"""The attributes of an api_request record that are read (and so converted and checked)."""
_DATA_FIELDS = ("sum", "gauge", "histogram", "exponentialHistogram", "summary")
_INT64 = 2**63
_PROTOCOL_HINT = "set OTEL_EXPORTER_OTLP_PROTOCOL=http/json"


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One `claude_code.api_request` log record: one model request of one session."""

    session_id: str
    sequence: int
    """event.sequence: rises per session, so (session_id, sequence) names the request."""
    at: float
    """Unix seconds when the request was made: its end (event.timestamp, else the record's
    timeUnixNano) less its duration_ms."""
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_micros: int


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One data point of claude_code.cost.usage or claude_code.token.usage."""

    metric: str
    """"cost" or "tokens"."""
    session_id: str
    model: str
    kind: str
    """token.usage's `type` (input, output, cacheRead, cacheCreation); "" for cost."""
    series: str
    """The point's attributes, sorted, as compact JSON: every one, so query_source or effort split
    a series the way the exporter's own aggregation does."""
    cumulative: bool
    start_ns: int
    end_ns: int
    value: float


@dataclass(frozen=True)
class Logs:
    requests: list[ApiRequest]
    records: int
    """Every log record of the export, api_request or not."""


@dataclass(frozen=True)
class Metrics:
    points: list[MetricPoint]
    seen: int
    """Every data point of the export, of a known metric or not."""


def decode(raw: bytes, content_type: str | None, content_encoding: str | None) -> Any:
    """The JSON document of an OTLP/HTTP request: its object, still to be parsed."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        sent = repr(content_type[:100]) if content_type else "none"
        raise UnsupportedMediaType(
            f"the hub reads OTLP/HTTP JSON (Content-Type: application/json), not {sent}: {_PROTOCOL_HINT}"
        )
    if len(raw) > MAX_OTLP_BYTES:
        raise PayloadTooLarge(f"the export is {len(raw)} bytes; at most {MAX_OTLP_BYTES} are read")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        raw = _gunzip(raw)
    elif encoding != "identity":
        shown = repr(content_encoding[:100]) if content_encoding else ""
        raise UnsupportedMediaType(f"Content-Encoding {shown} is not supported: send identity or gzip")
    if not raw or raw.isspace():
        raise MalformedJSON("the export is empty; send an OTLP/HTTP JSON object")
    try:
        document = json.loads(raw, parse_constant=_not_a_number)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "it nests too deeply" if isinstance(error, RecursionError) else str(error)
        raise MalformedJSON(f"the export is not valid JSON: {reason}") from None
    return _root(document)


def parse_logs(document: Any) -> Logs:
    """The api_request records of a logs export (`{"resourceLogs": [...]}`)."""
    requests: list[ApiRequest] = []
    records = 0
    for r, resource in enumerate(_array(_root(document), "resourceLogs", "")):
        resource_path = f"resourceLogs[{r}]"
        for s, scope in enumerate(_array(_object(resource, resource_path), "scopeLogs", resource_path)):
            scope_path = f"{resource_path}.scopeLogs[{s}]"
            logs = _array(_object(scope, scope_path), "logRecords", scope_path)
            records += len(logs)
            if records > MAX_OTLP_ITEMS:
                raise PayloadTooLarge(f"the export holds more than {MAX_OTLP_ITEMS} log records; send fewer")
            for i, record in enumerate(logs):
                request = _api_request(record, f"{scope_path}.logRecords[{i}]")
                if request is not None:
                    requests.append(request)
    return Logs(requests, records)


def parse_metrics(document: Any) -> Metrics:
    """The cost and token points of a metrics export (`{"resourceMetrics": [...]}`)."""
    points: list[MetricPoint] = []
    seen = 0
    for r, resource in enumerate(_array(_root(document), "resourceMetrics", "")):
        resource_path = f"resourceMetrics[{r}]"
        for s, scope in enumerate(_array(_object(resource, resource_path), "scopeMetrics", resource_path)):
            scope_path = f"{resource_path}.scopeMetrics[{s}]"
            for m, metric in enumerate(_array(_object(scope, scope_path), "metrics", scope_path)):
                metric_path = f"{scope_path}.metrics[{m}]"
                metric = _object(metric, metric_path)
                name = metric.get("name", "")
                if type(name) is not str:
                    raise MalformedJSON(f"{metric_path}.name: must be a string, not {_kind(name)}")
                for field in _DATA_FIELDS:
                    if metric.get(field) is None:
                        continue
                    data_path = f"{metric_path}.{field}"
                    data = _object(metric[field], data_path)
                    data_points = _array(data, "dataPoints", data_path)
                    seen += len(data_points)
                    if seen > MAX_OTLP_ITEMS:
                        raise PayloadTooLarge(
                            f"the export holds more than {MAX_OTLP_ITEMS} points; send fewer"
                        )
                    # A gauge or histogram of a known name is not what Claude Code sends: not counted.
                    if field == "sum" and name in METRICS:
                        points += _sum_points(METRICS[name], data, data_points, data_path)
    return Metrics(points, seen)


# -- log records -----------------------------------------------------------------------------------


def _api_request(record: Any, path: str) -> ApiRequest | None:
    record = _object(record, path)
    attributes = _attributes(record, path)
    body = record.get("body")
    if body is not None and type(body) is not dict:
        raise MalformedJSON(f"{path}.body: must be an object, not {_kind(body)}")
    event = attributes.get("event.name")
    if not (
        (body is not None and body.get("stringValue") == API_REQUEST)
        or (event is not None and event.get("stringValue") == "api_request")
    ):
        return None
    values = _values(record, attributes, path, _REQUEST_KEYS)
    session_id = values.get("session.id")
    if not (type(session_id) is str and 0 < len(session_id) <= MAX_SESSION_ID):
        raise MalformedJSON(
            f"{path}: an api_request record needs session.id, a non-empty string of at most "
            f"{MAX_SESSION_ID} characters, not {_shown(session_id)}"
        )
    _storable(session_id, path, "session.id")
    if "event.sequence" not in values:
        raise MalformedJSON(f"{path}: an api_request record needs event.sequence")
    model = values.get("model") or "unknown"
    if type(model) is not str:
        raise MalformedJSON(f"{path}: model must be a string, not {_shown(model)}")
    _storable(model, path, "model")

    def count(key: str, limit: int = MAX_COUNT) -> int:
        return 0 if key not in values else _whole(values[key], limit, path, key)

    if "cost_usd_micros" in values or "cost_usd" not in values:
        cost_micros = count("cost_usd_micros")
    else:
        cost_usd = _finite(values["cost_usd"], path, "cost_usd")
        cost_micros = _whole(round(cost_usd * 1e6), MAX_COUNT, path, "cost_usd")
    return ApiRequest(
        session_id=session_id,
        sequence=count("event.sequence", _INT64 - 1),
        # When the request was made: its end less its duration. The end is too late to attribute
        # by: Claude Code runs a tool as soon as the model has asked for it, before the response
        # (and its event) ends, so the request that asked for a claim would land in the task.
        at=_request_time(record, values, path) - count("duration_ms") / 1000,
        model=model,
        input_tokens=count("input_tokens"),
        output_tokens=count("output_tokens"),
        cache_read_tokens=count("cache_read_tokens"),
        cache_creation_tokens=count("cache_creation_tokens"),
        cost_micros=cost_micros,
    )


def _request_time(record: dict[str, Any], values: dict[str, Any], path: str) -> float:
    """When the response ended, in the session's clock: event.timestamp, or else timeUnixNano (when
    the record was made, which may be later: records are batched)."""
    stamp = values.get("event.timestamp")
    if stamp is not None:
        try:
            moment = datetime.fromisoformat(stamp) if type(stamp) is str else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None or moment.timestamp() <= 0:
            raise MalformedJSON(
                f"{path}: event.timestamp must be an ISO 8601 time with Z or an offset, not {_shown(stamp)}"
            )
        return moment.timestamp()
    nanos = _int64(record.get("timeUnixNano", 0), f"{path}.timeUnixNano")
    if nanos <= 0:
        raise MalformedJSON(f"{path}: an api_request record needs event.timestamp or a timeUnixNano above 0")
    return nanos / 1e9


# -- metric points ---------------------------------------------------------------------------------


def _sum_points(metric: str, data: dict[str, Any], data_points: list[Any], path: str) -> list[MetricPoint]:
    temporality = data.get("aggregationTemporality")
    cumulative = None
    if isinstance(temporality, int | str) and type(temporality) is not bool:  # True == 1
        cumulative = _TEMPORALITY.get(temporality)
    if cumulative is None:
        raise MalformedJSON(
            f"{path}.aggregationTemporality: must be 1 or AGGREGATION_TEMPORALITY_DELTA, or 2 or "
            f"AGGREGATION_TEMPORALITY_CUMULATIVE, not {_shown(temporality)}"
        )
    points = []
    for p, point in enumerate(data_points):
        point_path = f"{path}.dataPoints[{p}]"
        point = _object(point, point_path)
        values = _values(point, _attributes(point, point_path), point_path)
        try:
            series = json.dumps(values, sort_keys=True, separators=(",", ":"))
        except RecursionError:
            raise MalformedJSON(f"{point_path}.attributes: a value nests too deeply") from None
        if "asDouble" in point:
            value = _double(point["asDouble"], f"{point_path}.asDouble")
        elif "asInt" in point:
            value = float(_int64(point["asInt"], f"{point_path}.asInt"))
        else:
            raise MalformedJSON(f"{point_path}: a data point needs asDouble or asInt")
        if value < 0:
            raise MalformedJSON(f"{point_path}: a monotonic sum cannot be negative, not {value!r}")
        start_ns = _int64(point.get("startTimeUnixNano", 0), f"{point_path}.startTimeUnixNano")
        end_ns = _int64(point.get("timeUnixNano", 0), f"{point_path}.timeUnixNano")
        if start_ns < 0 or end_ns <= 0:
            raise MalformedJSON(
                f"{point_path}: needs a timeUnixNano above 0 (and startTimeUnixNano 0 or more)"
            )
        points.append(
            MetricPoint(
                metric=metric,
                session_id=_label(values, "session.id", point_path, MAX_SESSION_ID),
                model=_label(values, "model", point_path),
                kind=_label(values, "type", point_path) if metric == "tokens" else "",
                series=series,
                cumulative=cumulative,
                start_ns=start_ns,
                end_ns=end_ns,
                value=value,
            )
        )
    return points


def _label(values: dict[str, Any], key: str, path: str, limit: int | None = None) -> str:
    value = values.get(key, "")
    if type(value) is not str or (limit is not None and len(value) > limit):
        within = f" of at most {limit} characters" if limit is not None else ""
        raise MalformedJSON(f"{path}: {key} must be a string{within}, not {_shown(value)}")
    _storable(value, path, key)
    return value


# -- shapes and values -----------------------------------------------------------------------------


def _root(document: Any) -> dict[str, Any]:
    if type(document) is not dict:
        raise MalformedJSON(f"the export must be a JSON object, not {_kind(document)}")
    return document


def _object(value: Any, path: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise MalformedJSON(f"{path}: must be an object, not {_kind(value)}")
    return value


def _array(parent: dict[str, Any], key: str, path: str) -> list[Any]:
    """A repeated field: absent or null is empty, as in protobuf's JSON mapping."""
    value = parent.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise MalformedJSON(f"{path + '.' if path else ''}{key}: must be an array, not {_kind(value)}")
    return value


def _attributes(owner: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    """Each attribute's AnyValue by key, the shapes checked (a repeated key: the last)."""
    items = _array(owner, "attributes", path)
    # The attributes are most of an export: checked in C first, one by one only to name a wrong one.
    try:
        found = {item["key"]: item["value"] for item in items}
        if set(map(type, found)) <= {str} and set(map(type, found.values())) <= {dict}:
            return found
    except (TypeError, KeyError):
        pass
    return _checked_attributes(items, path)


def _checked_attributes(items: list[Any], path: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise MalformedJSON(f"{path}.attributes[{i}]: must be an object, not {_kind(item)}")
        key = item.get("key")
        value = item.get("value")
        if type(key) is not str:
            raise MalformedJSON(f"{path}.attributes[{i}]: key must be a string, not {_kind(key)}")
        if type(value) is not dict:
            raise MalformedJSON(f"{path}.attributes[{i}]: value must be an object, not {_kind(value)}")
        found[key] = value
    return found


def _values(
    owner: dict[str, Any], attributes: dict[str, dict[str, Any]], path: str, keys: Iterable[str] | None = None
) -> dict[str, Any]:
    """The attributes (those of `keys`, or all) as Python values."""
    values: dict[str, Any] = {}
    for key in attributes if keys is None else keys:
        if key in attributes:
            try:
                values[key] = _any_value(attributes[key])
            except MalformedJSON as error:
                # The path is spelled out only now: building one per attribute costs a third of a parse.
                index = max(i for i, item in enumerate(owner["attributes"]) if item["key"] == key)
                raise MalformedJSON(f"{path}.attributes[{index}] ({key[:64]}): {error.message}") from None
    return values


def _any_value(value: dict[str, Any]) -> Any:
    """An AnyValue as Python: str, bool, int, float; an array, kvlist or bytes value is kept as
    sent (it only ever takes part in a series' identity); an empty one is None."""
    if "stringValue" in value:
        text = value["stringValue"]
        if type(text) is not str:
            raise MalformedJSON(f"stringValue must be a string, not {_kind(text)}")
        return text
    if "intValue" in value:
        return _int64(value["intValue"], "intValue")
    if "doubleValue" in value:
        return _double(value["doubleValue"], "doubleValue")
    if "boolValue" in value:
        flag = value["boolValue"]
        if type(flag) is not bool:
            raise MalformedJSON(f"boolValue must be true or false, not {_kind(flag)}")
        return flag
    for field in ("arrayValue", "kvlistValue", "bytesValue"):
        if field in value:
            return {field: value[field]}
    return None


def _integer(raw: Any) -> int | None:
    """An integer as the protobuf JSON mapping sends one: a JSON number or a decimal string."""
    if type(raw) is int:
        return raw
    if type(raw) is float:
        return int(raw) if raw.is_integer() else None
    if type(raw) is str and len(raw) <= 20 and raw.isascii() and raw.removeprefix("-").isdigit():
        return int(raw)
    return None


def _int64(raw: Any, where: str) -> int:
    number = _integer(raw)
    if number is None or not -_INT64 <= number < _INT64:
        raise MalformedJSON(
            f"{where} must be a 64-bit integer (a number or a decimal string), not {_shown(raw)}"
        )
    return number


def _double(raw: Any, where: str) -> float:
    """A double of the protobuf JSON mapping: a JSON number or a numeric string; never NaN or
    Infinity, which no count or cost can be."""
    number: float | None = None
    if type(raw) in (int, float) or (type(raw) is str and len(raw) <= 64):
        try:
            number = float(raw)
        except (ValueError, OverflowError):
            number = None
    if number is None or not math.isfinite(number):
        raise MalformedJSON(f"{where} must be a finite number, not {_shown(raw)}")
    return number


def _whole(value: Any, limit: int, path: str, key: str) -> int:
    """A count read from an attribute, from 0 to `limit`: an int, or a whole double or decimal
    string (an exporter may send any number as either)."""
    number = _integer(value)
    if number is None or not 0 <= number <= limit:
        raise MalformedJSON(f"{path}: {key} must be a whole number from 0 to {limit}, not {_shown(value)}")
    return number


def _finite(value: Any, path: str, key: str) -> float:
    if type(value) is str:
        value = _double(value, f"{path}: {key}")
    if type(value) not in (int, float) or not 0 <= value < math.inf:
        raise MalformedJSON(f"{path}: {key} must be a finite number of 0 or more, not {_shown(value)}")
    return float(value)


def _storable(text: str, path: str, key: str) -> None:
    # A \ud800 escape parses to a lone surrogate, which no UTF-8 store can hold.
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise MalformedJSON(f"{path}: {key} holds a lone surrogate (\\ud800-\\udfff)") from None


def _not_a_number(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have.
    raise MalformedJSON(f"the export is not valid JSON: {name} is not a JSON number")


def _gunzip(raw: bytes) -> bytes:
    """The body inflated, never past MAX_OTLP_BYTES: a small gzip bomb is refused, not inflated.
    Every member of a multi-member gzip is read, as gzip itself does."""
    parts: list[bytes] = []
    size = 0
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(raw, MAX_OTLP_BYTES + 1 - size)
        except zlib.error as error:
            raise MalformedJSON(f"the export is not valid gzip: {error}") from None
        size += len(part)
        if size > MAX_OTLP_BYTES:
            raise PayloadTooLarge(
                f"the export inflates to more than {MAX_OTLP_BYTES} bytes; send less at once"
            )
        parts.append(part)
        if not inflater.eof:
            raise MalformedJSON("the export is not valid gzip: it ends before its last member does")
        raw = inflater.unused_data
        if not raw:
            return b"".join(parts)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) in (int, float):
        return "a number"
    if type(value) is str:
        return "a string"
    return "an array" if type(value) is list else "an object"


def _shown(value: Any) -> str:
    """A value for an error message: short, whatever was sent."""
    if value is None:
        return "none"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
