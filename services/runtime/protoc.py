"""Generate Python stubs and the Envoy descriptor set from protos/ (run by `make protos`)."""
from __future__ import annotations

import sys
from pathlib import Path

import google.api
import grpc_tools
from grpc_tools import protoc


def main(src: str, out: str) -> int:
    googleapis = Path(google.api.__file__).resolve().parents[2]  # site-packages: google/api/*.proto live here
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    protos = sorted(str(p) for p in Path(src).rglob("*.proto"))
    args = [
        "protoc",
        f"-I{src}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={Path(out) / 'novahouse.pb'}",
        *protos,
    ]
    return int(protoc.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
