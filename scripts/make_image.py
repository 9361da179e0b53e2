"""Build a small local workload image from busybox-static: no registry is reachable here.

The image's command serves the directory WWW over HTTP on PORT with busybox httpd, so an owner
can prepare files under a persisted /www over SSH and see them served once exposed.

    python scripts/make_image.py --ref localhost/tdx-demo-httpd:1 [--port 8080] [--www /www]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


def build(ref: str, port: int, www: str) -> None:
    podman = shutil.which("podman")
    if podman is None or not BUSYBOX.is_file():
        sys.exit("make_image: podman and busybox-static are needed (run ./scripts/setup)")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            for directory in ("bin", "tmp", "etc", "root", "proc", "sys", "dev", www.strip("/")):
                info = tarfile.TarInfo(directory)
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if directory == "tmp" else 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in applets:
                if applet != "busybox":
                    link = tarfile.TarInfo(f"bin/{applet}")
                    link.type = tarfile.SYMTYPE
                    link.linkname = "busybox"
                    tar.addfile(link)
        cmd = json.dumps(["/bin/httpd", "-f", "-p", str(port), "-h", www])
        with tar_path.open("rb") as tar_file:
            done = subprocess.run(
                [podman, "import", "--change", f"CMD {cmd}", "-", ref],
                stdin=tar_file,
                capture_output=True,
                check=False,
            )
    if done.returncode != 0:
        sys.exit(f"make_image: podman import failed: {done.stderr.decode(errors='replace')}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ref", required=True, help="image reference, e.g. localhost/x:1")
    parser.add_argument("--port", type=int, default=8080, help="port httpd listens on")
    parser.add_argument("--www", default="/www", help="directory httpd serves")
    args = parser.parse_args()
    build(args.ref, args.port, args.www)


if __name__ == "__main__":
    main()
