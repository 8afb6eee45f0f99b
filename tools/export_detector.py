"""Export a small YOLOv8-style detector (random weights) as a structure-only test model.

    /work/torchenv/bin/python tools/export_detector.py     # needs torch (see export_zoo.py)

The network follows the published YOLOv8 layout at a tiny width: Conv-BN-SiLU
blocks, C2f (Split, bottlenecks, Concat), SPPF (chained MaxPool, Concat), an FPN/PAN
neck (Resize, Concat), and a decoupled head with DFL box decoding (Reshape, Softmax,
a fixed 1x1 Conv) whose outputs are concatenated across scales. Written to
models/zoo/yolo_tiny.onnx (TorchScript exporter, opset 17, dynamic batch, H and W).
"""

from __future__ import annotations

import sys
from pathlib import Path

import export_zoo
import onnx
import torch
from torch import nn


class ConvBNSiLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.SiLU())


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True):
        super().__init__()
        self.cv1, self.cv2, self.add = ConvBNSiLU(c, c), ConvBNSiLU(c, c), shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.c = c_out // 2
        self.cv1 = ConvBNSiLU(c_in, 2 * self.c, 1)
        self.cv2 = ConvBNSiLU((2 + n) * self.c, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        hidden = c_in // 2
        self.cv1, self.cv2 = ConvBNSiLU(c_in, hidden, 1), ConvBNSiLU(hidden * 4, c_out, 1)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Detect(nn.Module):
    def __init__(self, classes: int, channels: tuple[int, ...], reg_max: int = 16):
        super().__init__()
        self.reg_max, self.no = reg_max, classes + 4 * reg_max
        c2, c3 = max(16, channels[0] // 4, 4 * reg_max), max(channels[0], classes)
        self.cv2 = nn.ModuleList(nn.Sequential(ConvBNSiLU(c, c2), ConvBNSiLU(c2, c2),
                                               nn.Conv2d(c2, 4 * reg_max, 1)) for c in channels)
        self.cv3 = nn.ModuleList(nn.Sequential(ConvBNSiLU(c, c3), ConvBNSiLU(c3, c3),
                                               nn.Conv2d(c3, classes, 1)) for c in channels)
        self.dfl = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.dfl.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)

    def forward(self, xs):
        outs = [torch.cat((b(x), c(x)), 1) for x, b, c in zip(xs, self.cv2, self.cv3,
                                                                   strict=True)]
        flat = torch.cat([o.view(o.shape[0], self.no, -1) for o in outs], 2)
        box, cls = flat.split((4 * self.reg_max, self.no - 4 * self.reg_max), 1)
        b, _, a = box.shape
        dist = self.dfl(box.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1))
        return torch.cat((dist.view(b, 4, a), cls.sigmoid()), 1)


class TinyYolo(nn.Module):
    def __init__(self, classes: int = 8, w: int = 16):
        super().__init__()
        self.stem = nn.Sequential(ConvBNSiLU(3, w, 3, 2), ConvBNSiLU(w, 2 * w, 3, 2),
                                  C2f(2 * w, 2 * w))
        self.p3 = nn.Sequential(ConvBNSiLU(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w))
        self.p4 = nn.Sequential(ConvBNSiLU(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w))
        self.p5 = nn.Sequential(ConvBNSiLU(8 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w),
                                SPPF(8 * w, 8 * w))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4, self.n3 = C2f(16 * w, 8 * w, shortcut=False), C2f(12 * w, 4 * w, shortcut=False)
        self.d3, self.m4 = ConvBNSiLU(4 * w, 4 * w, 3, 2), C2f(12 * w, 8 * w, shortcut=False)
        self.d4, self.m5 = ConvBNSiLU(8 * w, 8 * w, 3, 2), C2f(16 * w, 8 * w, shortcut=False)
        self.head = Detect(classes, (4 * w, 8 * w, 8 * w))

    def forward(self, x):
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = self.n4(torch.cat((self.up(p5), p4), 1))
        n3 = self.n3(torch.cat((self.up(n4), p3), 1))
        m4 = self.m4(torch.cat((self.d3(n3), n4), 1))
        m5 = self.m5(torch.cat((self.d4(m4), p5), 1))
        return self.head([n3, m4, m5])


def main() -> int:
    torch.manual_seed(0)
    model = TinyYolo().eval()
    export_zoo.randomize_batchnorm(model)
    path = Path(__file__).resolve().parent.parent / "models" / "zoo" / "yolo_tiny.onnx"
    x = torch.randn(1, 3, 128, 128)
    torch.onnx.export(model, x, str(path), opset_version=17, dynamo=False,
                      input_names=["images"], output_names=["output"],
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                    "output": {0: "batch", 2: "anchors"}})
    proto = onnx.load(str(path))
    export_zoo.strip_weights(proto)
    export_zoo.set_metadata(proto, "onnxprune.structure_only", "1")
    onnx.save(proto, str(path))
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
