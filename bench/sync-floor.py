"""Latency of the syncs a durable C-STORE needs, alone, on the disk that
holds DIR (default: a fresh directory under /tmp): per iteration, append
4 KiB to a log file and fdatasync it; write 525 KB (one CT slice) to a new
file and fdatasync it; rename it and fsync the directory; and, for
comparison, write 525 KB to another new file without any sync. Prints p10
and p50 of each in milliseconds.

    python3 bench/sync-floor.py [N=300] [DIR]
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
base = tempfile.mkdtemp(dir=sys.argv[2] if len(sys.argv) > 2 else None)
try:
    log = os.open(os.path.join(base, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    rec, data = os.urandom(4096), os.urandom(525 * 1024)
    times = {k: [] for k in ("log", "file", "dir", "nosync")}
    for i in range(n):
        t = time.perf_counter()
        os.write(log, rec)
        os.fdatasync(log)
        times["log"].append(time.perf_counter() - t)
        tmp = os.path.join(base, f"f{i}#1")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        t = time.perf_counter()
        os.fdatasync(fd)
        times["file"].append(time.perf_counter() - t)
        os.close(fd)
        os.rename(tmp, os.path.join(base, f"f{i}"))
        t = time.perf_counter()
        dfd = os.open(base, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        times["dir"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fd = os.open(os.path.join(base, f"g{i}"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.close(fd)
        times["nosync"].append(time.perf_counter() - t)
    names = {
        "log": "4 KiB log append + fdatasync",
        "file": "525 KB new file fdatasync",
        "dir": "directory fsync after rename",
        "nosync": "525 KB write, no sync",
    }
    for k, v in times.items():
        v.sort()
        print(f"{names[k]:32} p10 {v[len(v) // 10] * 1000:.2f} ms  p50 {statistics.median(v) * 1000:.2f} ms")
finally:
    shutil.rmtree(base, ignore_errors=True)
