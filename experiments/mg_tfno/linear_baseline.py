"""Reference row for the MG-TFNO CPU table: the best LINEAR translation-invariant map f -> w(T).

Fits one complex multiplier per Fourier mode by least squares on the training pairs and reports its
test relative L2 and H1 (the metrics of the training runs). A model that does not beat it has learned
no nonlinearity. Also the same fit restricted to what a 12 x 12-mode FNO layer holds as a linear map
(one multiplier per mode with |k_x|, |k_y| <= 6 and a single constant above, the pointwise skip).

    python experiments/mg_tfno/linear_baseline.py --data ns2d_hr_t025
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import torch

from neuropde.losses import rel_l2, rel_sobolev
from neuropde.run import compose_config, data_root

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="ns2d_hr_t025")
    p.add_argument("--kmax", type=int, default=6, help="modes per axis an FNO layer holds (12 modes -> 6)")
    args = p.parse_args()
    cfg = compose_config("train", ["model=mg_tfno", f"data={args.data}"])
    folder = data_root(cfg) / cfg.data.name / str(cfg.data.resolution)

    def load(split):
        f = torch.tensor(h5py.File(folder / f"{split}.h5", "r")["fields"][:]).double()
        return f[:, 0], f[:, 1]

    x, y = load("train")
    X, Y = torch.fft.fft2(x), torch.fft.fft2(y)
    full = (Y * X.conj()).sum(0) / (X.abs() ** 2).sum(0)
    k = torch.fft.fftfreq(x.shape[-1], 1 / x.shape[-1]).abs()
    low = (k[:, None] <= args.kmax) & (k[None] <= args.kmax)
    const = ((Y * X.conj()).real * ~low).sum() / ((X.abs() ** 2) * ~low).sum()
    fno_like = torch.where(low, full, const.to(full.dtype))
    xt, yt = load("test")
    out = {}
    for name, m in (("linear", full), (f"linear_fno_k{args.kmax}", fno_like)):
        pred = torch.fft.ifft2(torch.fft.fft2(xt) * m).real
        out[name] = {"rel_l2": float(rel_l2(pred[:, None], yt[:, None])),
                     "h1": float(rel_sobolev(pred[:, None], yt[:, None], 1.0, float(cfg.data.spec.L)))}
    out["data"] = args.data
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"linear_{args.data}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
