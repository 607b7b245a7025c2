"""Write app/contract/model_names.json: the timm and torchvision classification models the API
accepts, with facts it checks at submission (no torch in the API), for the installed versions.

    PYTHONPATH=$PWD .venv/bin/python scripts/make_model_names.py [--out PATH] [--timm PATTERN ...]

Every model is built on the meta device (no memory, no arithmetic), for 3 input channels and
1000 classes (the reference parameter count). A model is accepted when it builds and runs at
its default size; its facts are: parameters, default input side, smallest input side (and
whether that is the only one it takes), feature stages (name, channels, reduction).
tests/distill/test_zoo.py checks the file against the installed libraries.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.distill import zoo  # noqa: E402

OUT = ROOT / "app" / "contract" / "model_names.json"


def facts(library: str, name: str) -> dict | None:
    """The model's facts, or None when it cannot be built and run without weights."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = zoo.create_network(library, name, in_chans=3, num_classes=1000).eval()
            default = zoo.default_input_size(library, net)
            smallest, fixed = zoo.min_input_size(net, 3, default)
            if smallest is None:
                return None
            stages = zoo.feature_stages(library, net, probe_size=default)
            state = state_facts(library, name, net)
    except Exception:
        return None
    return {
        "parameters": sum(p.numel() for p in net.parameters()),
        "state": state,
        "input_size": default,
        "min_input_size": smallest,
        "fixed_input_size": fixed,
        "stages": [[s.name, s.channels, s.reduction] for s in stages],
    }


def _state(net: torch.nn.Module) -> tuple[int, int, int]:
    state = net.state_dict()
    floats = sum(v.numel() for v in state.values() if v.is_floating_point())
    return len(state), floats, sum(not v.is_floating_point() for v in state.values())


def state_facts(library: str, name: str, net: torch.nn.Module) -> dict:
    """The state dict's size as a function of the data: `keys` entries, of which `integer` are
    not floating point, and a + b * in_chans + c * num_classes floating-point elements (the
    stem convolution and the head are linear in them), so the API can check a brought
    safetensors file without torch."""
    keys, ref, integer = _state(net)
    one_chan = _state(zoo.create_network(library, name, in_chans=1, num_classes=1000))[1]
    ten_cls = _state(zoo.create_network(library, name, in_chans=3, num_classes=10))[1]
    b = (ref - one_chan) // 2
    c = (ref - ten_cls) // 990
    return {"keys": keys, "integer": integer, "elements": [ref - 3 * b - 1000 * c, b, c]}


def versions() -> dict[str, str]:
    import timm
    import torchvision

    return {
        "torch": torch.__version__.split("+")[0],
        "timm": timm.__version__,
        "torchvision": torchvision.__version__.split("+")[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--timm",
        nargs="*",
        default=["*"],
        help="fnmatch patterns of the timm names to "
        "offer (default: all); torchvision's classification models are always all offered",
    )
    args = parser.parse_args()
    data: dict = {"versions": versions(), "reference": {"in_chans": 3, "num_classes": 1000}, "timm_patterns": args.timm}
    for library in zoo.LIBRARIES:
        t0 = time.monotonic()
        found = {}
        names = zoo.model_names(library)
        if library == "timm":
            names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in args.timm)]
        for i, name in enumerate(names, 1):
            if i % 100 == 0:
                print(f"{library}: {i} of {len(names)}", file=sys.stderr, flush=True)
            f = facts(library, name)
            if f is not None:
                found[name] = f
        data[library] = found
        print(f"{library}: {len(found)} models in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
