#!/usr/bin/env python3
"""Reads a training run's reports as the reference tools do, and prints what they see.

  * TensorBoard event files (``*tfevents*``) through TensorBoard's own ``EventAccumulator``:
    the file_version, every scalar tag with its (step, value, wall_time) points;
  * a loss-curve PNG through Pillow when it is installed (decode, size, mode, colours, text
    chunks), else by hand (chunk CRC-32s, zlib stream and its Adler-32, IHDR);
  * with ``--log output_dir/log.jsonl``: that each log entry's numbers are in the event files under
    the tags transformers' ``TensorBoardCallback`` gives them (``rewrite_logs``), as float32.

For humans, not CI. Environment: /work/venv-ref with tensorboard (see
scripts/requirements-reference.txt):

  /work/venv-ref/bin/python scripts/check_training_reports.py OUTPUT_DIR [--log OUTPUT_DIR/log.jsonl]
  FERRO_REPORT_DIR=/tmp/reports cargo test --release -p ferro-train --test report example_reports
  /work/venv-ref/bin/python scripts/check_training_reports.py /tmp/reports

Paths may be directories (searched recursively for event files and .png files) or files.
Exits 1 when a file cannot be read or a check fails.
"""

import argparse
import json
import os
import struct
import sys
import zlib


def find(paths):
    events, pngs = [], []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                for f in sorted(files):
                    full = os.path.join(root, f)
                    if "tfevents" in f:
                        events.append(full)
                    elif f.lower().endswith(".png"):
                        pngs.append(full)
        elif "tfevents" in os.path.basename(p):
            events.append(p)
        else:
            pngs.append(p)
    return sorted(events), sorted(pngs)


def read_events(path):
    """{tag: [(step, value, wall_time)]} as TensorBoard's EventAccumulator reads the file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(path, size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    print(f"{path}")
    print(f"  file_version (as EventAccumulator reads it): {acc.file_version!r}")
    tags = acc.Tags()["scalars"]
    out = {}
    for tag in tags:
        points = [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)]
        out[tag] = points
        shown = ", ".join(f"{s}: {v:.6g}" for s, v, _ in points)
        print(f"  {tag} ({len(points)}): {shown}")
    # EventAccumulator keeps the number after "brain.Event:" of the first event
    if acc.file_version != 2.0:
        raise SystemExit(f"{path}: file_version {acc.file_version!r}, not 2 ('brain.Event:2')")
    if not tags:
        raise SystemExit(f"{path}: no scalars")
    return out


def rewrite_logs(d):
    """transformers.integrations.integration_utils.rewrite_logs."""
    out = {}
    for k, v in d.items():
        if k.startswith("eval_"):
            out["eval/" + k[5:]] = v
        elif k.startswith("test_"):
            out["test/" + k[5:]] = v
        else:
            out["train/" + k] = v
    return out


def compare_with_log(scalars, log_path):
    expected = []
    with open(log_path) as f:
        for line in f:
            if not line.strip():
                continue
            entry = json.loads(line)
            step = int(entry.pop("step", 0))
            for tag, v in rewrite_logs(entry).items():
                if isinstance(v, (int, float)):
                    expected.append((tag, step, float(v)))
    missing = []
    for tag, step, v in expected:
        f32 = struct.unpack("<f", struct.pack("<f", v))[0]
        if not any(s == step and val == f32 for s, val, _ in scalars.get(tag, [])):
            missing.append((tag, step, v))
    n_events = sum(len(p) for p in scalars.values())
    print(f"{log_path}: {len(expected)} scalars expected, {n_events} in the event files, "
          f"{len(missing)} missing")
    for m in missing[:20]:
        print(f"  missing {m}")
    return not missing


def check_png_by_hand(path, data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: not a PNG")
    at, idat, ihdr, chunks = 8, b"", None, []
    while at < len(data):
        (n,) = struct.unpack(">I", data[at:at + 4])
        kind = data[at + 4:at + 8]
        body = data[at + 8:at + 8 + n]
        (crc,) = struct.unpack(">I", data[at + 8 + n:at + 12 + n])
        if zlib.crc32(kind + body) != crc:
            raise SystemExit(f"{path}: bad CRC in {kind!r}")
        chunks.append(kind.decode())
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        at += 12 + n
    raw = zlib.decompress(idat)  # checks the Adler-32 too
    w, h = ihdr[0], ihdr[1]
    print(f"  (no Pillow) chunks {chunks}, IHDR {ihdr}, {len(raw)} bytes inflated "
          f"(expected {h * (1 + 3 * w)})")
    return len(raw) == h * (1 + 3 * w)


def check_png(path):
    data = open(path, "rb").read()
    print(f"{path}: {len(data)} bytes")
    try:
        from PIL import Image
    except ImportError:
        return check_png_by_hand(path, data)
    with Image.open(path) as im:
        im.verify()  # chunk CRCs and structure
    with Image.open(path) as im:
        im.load()  # decodes the pixels (zlib + Adler-32)
        colours = im.getcolors(maxcolors=1 << 20)
        non_white = sum(n for n, c in colours if c != (255, 255, 255))
        top = sorted(colours, reverse=True)[:6]
        print(f"  Pillow: format {im.format}, size {im.size}, mode {im.mode}, "
              f"{len(colours)} colours, {non_white} non-white pixels")
        print(f"  most common colours: {top}")
        print(f"  text: {dict(im.text)}")
        return im.format == "PNG" and non_white > 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--log", help="a Trainer's log.jsonl to compare the event files with")
    args = ap.parse_args()
    events, pngs = find(args.paths)
    if not events and not pngs:
        raise SystemExit("no event file and no PNG found")
    ok = True
    scalars = {}
    for path in events:
        for tag, points in read_events(path).items():
            scalars.setdefault(tag, []).extend(points)
    if args.log:
        ok &= compare_with_log(scalars, args.log)
    for path in pngs:
        ok &= bool(check_png(path))
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
