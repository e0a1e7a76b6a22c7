"""What the GPU proof kit carries to the device, in calls of at most 64 MiB (issue 17; see README.md).

    python benchmarks/gpu/carry_plan.py bundle STAGE BUNDLE     # here: pack a folder as .tar.xz (if it changed)
    python benchmarks/gpu/carry_plan.py plan --embed DIR --bundle BUNDLE --carry DIR   # here: lay out the calls
    python benchmarks/gpu/carry_plan.py restore --parts DIR --to SITE                  # there: check and unpack

Call 1 carries the embedding wheels and runs ``run.sh embed``. The FAISS bundle follows in as few calls as it
needs, cut into parts; the last of them also carries the manifest (sizes and sha256 of every part and of the
whole) and runs ``run.sh faiss``, which stashes and checks the parts before unpacking them. A call carries
the working tree too (tracked and untracked, not ignored, files): the plan keeps every call under TARGET and
``plan`` fails when a laid-out call would pass LIMIT, the device tool's cap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MiB = 2**20
LIMIT = 64 * MiB  # the device tool's cap on what one call carries, working tree included
TARGET = 60 * MiB  # what the plan fills a call to, leaving room for the tree to grow
MANIFEST = "faiss-site.json"
MANIFEST_ROOM = 8192  # bytes kept for the manifest in the last FAISS call
PART = "faiss-site.tar.xz.part-{:02d}"
PART_PREFIX = PART.split("{")[0]
TIMEOUT_S = {"embed": 420, "stash": 120, "faiss": 420}  # the run tool's timeout_s for each kind of call
XZ_PRESET = 9 | lzma.PRESET_EXTREME  # 135 MB faiss-gpu wheel → ~57 MB: one call instead of three


class PlanError(Exception):
    """The files cannot be carried within the limits."""


@dataclass
class Call:
    """One device call: what it carries (name → bytes) and which run.sh mode it runs."""

    number: int
    mode: str
    files: dict[str, int] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The carried folder, relative to the repository root."""
        return f"benchmarks/gpu/carry/call-{self.number}"

    def command(self) -> str:
        """The command string of the run tool's call."""
        return f"bash benchmarks/gpu/run.sh {self.mode}"


def plan_calls(tree_bytes: int, embed: dict[str, int], bundle_bytes: int, target: int = TARGET) -> list[Call]:
    """Call 1: the embedding wheels; then the bundle in parts, filling each call up to ``target`` with the tree."""
    room = target - tree_bytes
    if sum(embed.values()) > room:
        raise PlanError(f"the embedding wheels ({sum(embed.values()) / MiB:.1f} MiB) and the working tree do not fit")
    if room <= MANIFEST_ROOM:
        raise PlanError(f"the working tree ({tree_bytes / MiB:.1f} MiB) leaves no room in a call")
    calls = [Call(1, "embed", dict(embed))]
    left, parts = bundle_bytes, 0
    while True:
        call = Call(len(calls) + 1, "stash")
        calls.append(call)
        last = left + MANIFEST_ROOM <= room
        if left:
            parts += 1
            call.files[PART.format(parts)] = left if last else min(left, room)
            left -= call.files[PART.format(parts)]
        if last:
            call.mode = "faiss"
            call.files[MANIFEST] = MANIFEST_ROOM
            return calls


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def lay_out(calls: list[Call], embed_dir: Path, bundle: Path, carry: Path) -> None:
    """Write each call's folder under ``carry``: wheels (hard links), bundle parts, the manifest in the last."""
    shutil.rmtree(carry, ignore_errors=True)
    parts, offset = [], 0
    with bundle.open("rb") as source:
        for call in calls:
            folder = carry / f"call-{call.number}"
            folder.mkdir(parents=True)
            for name, size in call.files.items():
                if name == MANIFEST:
                    continue
                if name.startswith(PART_PREFIX):
                    source.seek(offset)
                    (folder / name).write_bytes(source.read(size))
                    parts.append({"name": name, "bytes": size, "sha256": sha256(folder / name)})
                    offset += size
                else:
                    os.link(embed_dir / name, folder / name)
    manifest = {"bundle": bundle.name, "bytes": bundle.stat().st_size, "sha256": sha256(bundle), "parts": parts}
    (carry / f"call-{calls[-1].number}" / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def tree_bytes(repo: Path) -> int:
    """Bytes of the working tree that travels with every call: tracked and untracked files git does not ignore,
    and ``shared/`` when the checkout has one."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    files = [repo / os.fsdecode(name) for name in listed if name]
    files += list((repo / "shared").rglob("*")) if (repo / "shared").is_dir() else []
    return sum(path.stat().st_size for path in set(files) if path.is_file() and not path.is_symlink())


def carried_bytes(carry: Path) -> dict[int, int]:
    """Bytes in each laid-out call folder, by call number."""
    return {
        int(folder.name.split("-")[1]): sum(path.stat().st_size for path in folder.iterdir())
        for folder in sorted(carry.glob("call-*"))
    }


def report(calls: list[Call], carried: dict[int, int], tree: int) -> list[str]:
    """One line per call (command, carry list, timeout and size); raises PlanError past LIMIT."""
    lines, over = [], []
    for call in calls:
        total = carried[call.number] + tree
        lines.append(
            f"call {call.number}: command={call.command()!r} carry={[call.folder]} timeout_s={TIMEOUT_S[call.mode]}"
            f"  ({carried[call.number] / MiB:.1f} MiB carried + {tree / MiB:.1f} MiB tree = {total / MiB:.1f} MiB)"
        )
        if total > LIMIT:
            over.append(f"call {call.number} would carry {total / MiB:.1f} MiB, over the {LIMIT // MiB} MiB limit")
    if over:
        raise PlanError("; ".join(over))
    return lines


def bundle_folder(stage: Path, bundle: Path) -> bool:
    """Pack ``stage`` as ``bundle`` (tar, xz -9e) unless its stamp says it holds these files; True if packed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(stage)}\0{sha256(path)}\0{path.stat().st_mode:o}\n".encode())
    stamp = bundle.with_name(bundle.name + ".stamp")
    if bundle.exists() and stamp.exists() and stamp.read_text() == digest.hexdigest():
        return False
    with tarfile.open(bundle, "w:xz", preset=XZ_PRESET) as archive:
        for path in sorted(stage.iterdir()):
            archive.add(path, arcname=path.name)
    stamp.write_text(digest.hexdigest())
    return True


def restore(parts_dir: Path, site: Path) -> None:
    """Check the stashed parts against the manifest, join them, check the whole and unpack it into ``site``."""
    if not (parts_dir / MANIFEST).is_file():
        raise PlanError(f"no {MANIFEST} in {parts_dir}: the last FAISS call's folder was not carried")
    manifest = json.loads((parts_dir / MANIFEST).read_text())
    missing = [part["name"] for part in manifest["parts"] if not (parts_dir / part["name"]).is_file()]
    if missing:
        raise PlanError(
            f"missing {', '.join(missing)} in {parts_dir}: the machine went back between the FAISS calls; "
            "carry them again in one warm run of calls"
        )
    bad = [part["name"] for part in manifest["parts"] if sha256(parts_dir / part["name"]) != part["sha256"]]
    if bad:
        raise PlanError(f"corrupt parts: {', '.join(bad)}")
    joined = parts_dir / manifest["bundle"]
    with joined.open("wb") as out:
        for part in manifest["parts"]:
            with (parts_dir / part["name"]).open("rb") as source:
                shutil.copyfileobj(source, out)
    if sha256(joined) != manifest["sha256"]:
        raise PlanError(f"{joined} does not match the manifest's sha256")
    shutil.rmtree(site, ignore_errors=True)
    with tarfile.open(joined, "r:xz") as archive:
        archive.extractall(site, filter="data")
    print(f"restored {manifest['bundle']} ({manifest['bytes'] / MiB:.1f} MiB, sha256 ok) into {site}")


def main(argv: list[str] | None = None) -> None:
    """Command line: bundle, plan or restore."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bundle = commands.add_parser("bundle", help="pack a folder as .tar.xz")
    bundle.add_argument("stage", type=Path)
    bundle.add_argument("bundle", type=Path)
    plan = commands.add_parser("plan", help="lay out the calls' folders and print the run sequence")
    plan.add_argument("--embed", type=Path, required=True, help="folder of the embedding wheels")
    plan.add_argument("--bundle", type=Path, required=True, help="the FAISS bundle (.tar.xz)")
    plan.add_argument("--carry", type=Path, required=True, help="folder for the calls' folders (git-ignored)")
    plan.add_argument("--repo", type=Path, default=Path.cwd(), help="repository root (for the working tree's size)")
    unpack = commands.add_parser("restore", help="check the stashed parts and unpack the bundle")
    unpack.add_argument("--parts", type=Path, required=True)
    unpack.add_argument("--to", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "bundle":
            print(f"{args.bundle}: {'packed' if bundle_folder(args.stage, args.bundle) else 'unchanged'}")
        elif args.command == "plan":
            tree = tree_bytes(args.repo)
            wheels = {path.name: path.stat().st_size for path in sorted(args.embed.glob("*.whl"))}
            calls = plan_calls(tree, wheels, args.bundle.stat().st_size)
            lay_out(calls, args.embed, args.bundle, args.carry)
            print("\n".join(report(calls, carried_bytes(args.carry), tree)))
        else:
            restore(args.parts, args.to)
    except PlanError as error:
        sys.exit(f"carry_plan: {error}")


if __name__ == "__main__":
    main()
