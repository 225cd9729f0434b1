"""Breaking-change check for protos/: compare the contracts with the committed baseline (protos/baseline.json).

Adding is fine; removing or renumbering a field, enum value, message, RPC or service, or changing a field's
type or an RPC's request/response type, breaks existing clients. `make proto-baseline` records a deliberate change.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from testsupport.contracts import ROOT, load_descriptor_set, project_files

BASELINE = ROOT / "protos" / "baseline.json"


def summarize(fds: descriptor_pb2.FileDescriptorSet | None = None) -> dict:
    fds = fds or load_descriptor_set()
    messages, enums, services = {}, {}, {}

    def walk_message(prefix: str, msg: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{msg.name}"
        messages[name] = {
            f.name: {"number": f.number, "type": f.type, "label": f.label, "type_name": f.type_name}
            for f in msg.field
        }
        for nested in msg.nested_type:
            if not nested.options.map_entry:
                walk_message(name, nested)
        for enum in msg.enum_type:
            enums[f"{name}.{enum.name}"] = {v.name: v.number for v in enum.value}

    for f in project_files(fds):
        for msg in f.message_type:
            walk_message(f.package, msg)
        for enum in f.enum_type:
            enums[f"{f.package}.{enum.name}"] = {v.name: v.number for v in enum.value}
        for svc in f.service:
            services[f"{f.package}.{svc.name}"] = {
                m.name: {"input": m.input_type, "output": m.output_type} for m in svc.method
            }
    return {"messages": messages, "enums": enums, "services": services}


def breaking_changes(baseline: dict, current: dict) -> list[str]:
    problems = []
    for name, fields in baseline["messages"].items():
        now = current["messages"].get(name)
        if now is None:
            problems.append(f"message {name} removed")
            continue
        by_number = {f["number"]: field for field, f in now.items()}
        for field, old in fields.items():
            new = now.get(field)
            if new is None:
                problems.append(f"field {name}.{field} removed")
            elif new["number"] != old["number"]:
                problems.append(f"field {name}.{field} renumbered {old['number']} -> {new['number']}")
            elif (new["type"], new["label"], new["type_name"]) != (old["type"], old["label"], old["type_name"]):
                problems.append(f"field {name}.{field} changed type")
            reused = by_number.get(old["number"])
            if reused is not None and reused != field:
                problems.append(f"field number {old['number']} of {name} reused by {reused}")
    for name, values in baseline["enums"].items():
        now = current["enums"].get(name)
        if now is None:
            problems.append(f"enum {name} removed")
            continue
        for value, number in values.items():
            if now.get(value) != number:
                problems.append(f"enum value {name}.{value} removed or renumbered")
    for name, methods in baseline["services"].items():
        now = current["services"].get(name)
        if now is None:
            problems.append(f"service {name} removed")
            continue
        for method, types in methods.items():
            if method not in now:
                problems.append(f"rpc {name}/{method} removed")
            elif now[method] != types:
                problems.append(f"rpc {name}/{method} changed its request or response type")
    return problems


def write_baseline(path: Path = BASELINE) -> None:
    path.write_text(json.dumps(summarize(), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else BASELINE
    write_baseline(target)
    print(f"wrote {target}")
