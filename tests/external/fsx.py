"""fsx (xfstests' file-system exerciser, ../shared/vendor/xfstests-fsx) built once per
machine and run on one file of a mount: random reads, writes, truncates and copy ranges,
every read checked against fsx's own model of the file."""
import os
import subprocess

from .pjdfstest import BUILD_ROOT, VENDOR


def build():
    out = os.path.join(BUILD_ROOT, "fsx")
    if os.path.exists(out):
        return out
    src = os.path.join(VENDOR, "xfstests-fsx")
    if not os.path.isdir(src):
        raise RuntimeError(f"fsx sources not found at {src} (set WORMFS_VENDOR)")
    os.makedirs(BUILD_ROOT, exist_ok=True)
    tmp = out + ".part"
    subprocess.run(["gcc", "-O2", "-I", src, "-I", f"{src}/include", "-I", f"{src}/src",
                    "-include", f"{src}/config.h", "-include", "getopt.h", "-o", tmp,
                    f"{src}/ltp/fsx.c"], check=True, capture_output=True)
    os.rename(tmp, out)
    return out


def run(path, logdir, *, ops, seed, mmap, reopen=None, timeout=600):
    cmd = [build(), "-N", str(ops), "-S", str(seed), "-P", str(logdir)]
    if not mmap:
        cmd += ["-R", "-W"]
    if reopen:
        cmd += ["-c", str(reopen)]
    return subprocess.run(cmd + [str(path)], capture_output=True, text=True, timeout=timeout)
