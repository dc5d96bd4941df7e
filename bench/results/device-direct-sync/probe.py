import os, sys, time, mmap
d = sys.argv[1] if len(sys.argv) > 1 else "."
path = os.path.join(d, "fua-probe")
size = 64 << 20
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(fd, bytes(size), 0); os.fsync(fd); os.close(fd)
rec = os.urandom(120)
def run(name, flags, direct, sync, secs=1.5):
    fd = os.open(path, os.O_RDWR | flags)
    buf = mmap.mmap(-1, 8192) if direct else None
    pos = n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < secs and pos + 4096 <= size:
            if direct:
                off = pos & ~4095
                buf[pos - off: pos - off + 120] = rec
                ln = 8192 if pos - off + 120 > 4096 else 4096
                os.pwrite(fd, memoryview(buf)[:ln], off)
                if ln == 8192: buf[:4096] = buf[4096:]
            else:
                os.pwrite(fd, rec, pos)
            if sync:
                os.fdatasync(fd)
            pos += 120; n += 1
        r = n / (time.perf_counter() - t0)
        print(f"{name:40s} {r:10.0f}/s  {1e6/r:7.1f} us", flush=True)
    except OSError as e:
        print(name, "ERR", e, flush=True)
    finally:
        os.close(fd)
for rep in range(1):
    run("pwrite+fdatasync", 0, False, True)
    run("O_DSYNC pwrite", os.O_DSYNC, False, False)
    run("O_DIRECT pwrite4k+fdatasync", os.O_DIRECT, True, True)
    run("O_DIRECT|O_DSYNC pwrite4k (FUA?)", os.O_DIRECT | os.O_DSYNC, True, False)
os.unlink(path)
