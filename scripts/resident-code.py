#!/usr/bin/env python3
"""Which of a binary's code is resident in a running process: the present pages of its mappings
(/proc/PID/pagemap, as root), resolved to symbols (nm) and summed per crate.

Usage: sudo python3 scripts/resident-code.py PID path/to/binary (needs a binary with symbols)."""
import sys, struct, subprocess, re, bisect, collections
pid, binary = sys.argv[1], sys.argv[2]
PAGE = 4096
# symbols sorted by address
syms = []
for line in subprocess.run(['nm', '-n', '-C', '--defined-only', binary], capture_output=True, text=True).stdout.splitlines():
    parts = line.split(' ', 2)
    if len(parts) == 3 and parts[1] in 'tTWw':
        syms.append((int(parts[0], 16), parts[2]))
addrs = [a for a, _ in syms]
# load segments: (vaddr, offset, filesz)
segs = []
for line in subprocess.run(['readelf', '-lW', binary], capture_output=True, text=True).stdout.splitlines():
    f = line.split()
    if f and f[0] == 'LOAD':
        segs.append((int(f[2], 16), int(f[1], 16), int(f[4], 16)))
maps = []
for line in open(f'/proc/{pid}/maps'):
    f = line.split()
    if len(f) >= 6 and f[5] == binary:
        lo, hi = (int(x, 16) for x in f[0].split('-'))
        maps.append((lo, hi, int(f[2], 16), f[1]))
pm = open(f'/proc/{pid}/pagemap', 'rb')
def crate(name):
    name = re.sub(r'^(<|_<)+', '', name)
    m = re.match(r'([A-Za-z_][A-Za-z0-9_]*)(::|$)', name)
    return m.group(1) if m else name[:30]
by_crate = collections.Counter(); by_map = collections.Counter()
for lo, hi, off, perm in maps:
    for va in range(lo, hi, PAGE):
        pm.seek(va // PAGE * 8)
        (e,) = struct.unpack('<Q', pm.read(8))
        if not (e >> 63) & 1:
            continue
        by_map[perm] += 1
        if 'x' not in perm:
            continue
        foff = off + (va - lo)
        for sv, so, sz in segs:
            if so <= foff < so + sz:
                elf = sv + (foff - so); break
        else:
            continue
        # crates of the symbols overlapping this page, weighted by bytes
        i = max(bisect.bisect_right(addrs, elf) - 1, 0)
        while i < len(syms) and syms[i][0] < elf + PAGE:
            start = max(syms[i][0], elf); end = min(syms[i + 1][0] if i + 1 < len(syms) else elf + PAGE, elf + PAGE)
            if end > start:
                by_crate[crate(syms[i][1])] += end - start
            i += 1
print('resident pages by mapping:', {k: f'{v*4} KiB' for k, v in by_map.items()})
for c, b in by_crate.most_common(40):
    print(f'{b/1024:8.0f} KiB  {c}')
