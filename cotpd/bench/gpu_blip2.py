"""Step 3 of `make gpu-check`: the BLIP-2 captioner (cotpd.captions.blip2) on a tiny random
checkpoint on a device; bf16 on CUDA. `python -m cotpd.bench.gpu_blip2 cuda` prints one JSON line."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from cotpd_testing.tiny_blip2 import tiny_blip2

from ..captions.base import OK
from ..config import Blip2Cfg
from ..captions.blip2 import Blip2Captioner


def main(argv: list[str] | None = None) -> int:
    device = (argv if argv is not None else sys.argv[1:] or ["cuda"])[0]
    with tempfile.TemporaryDirectory() as tmp:
        for i, color in enumerate([(200, 30, 30), (20, 20, 220), (10, 180, 40)]):
            Image.new("RGB", (48, 40), color).save(Path(tmp) / f"{i}.jpg")
        model, processor = tiny_blip2()
        t0 = time.perf_counter()
        cap = Blip2Captioner(model, processor, Path(tmp), Blip2Cfg(batch_size=2, max_new_tokens=5, device=device))
        out = cap.caption(["0.jpg", "1.jpg", "2.jpg"])
        seconds = time.perf_counter() - t0
    bad = {k: r.status for k, r in out.items() if r.status != OK or not r.caption}
    print(json.dumps({"device": str(cap.device), "dtype": str(cap.dtype), "captions": len(out) - len(bad),
                      "failed": bad, "seconds": round(seconds, 2)}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
