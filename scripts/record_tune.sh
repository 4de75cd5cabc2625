#!/usr/bin/env bash
# A terminal recording (text) of `superopt tune` on a large kernel: an fp32 matmul (default
# 2048^3) on the cpu backend, run on a pseudo-terminal (Python's pty, 120 x 30) so the progress
# is the rich bar a user sees, phases (hand rules, solve, measure: compile / verify / time of
# each candidate), counts and ETA. The capture is written with its ANSI codes stripped: each
# screen line as it was drawn (the bar is redrawn in place about 10 times a second), one per
# line, consecutive repeats dropped; then the report the command prints. Each SIZE:BUDGET pair
# is one recording, appended to OUT: the default records a budget that holds every candidate
# and one that the deadline cuts short (skipped candidates, fewer timed runs).
#
#   scripts/record_tune.sh [OUT] [SIZE:BUDGET ...]     # default: bench/results/tune-recording.txt 2048:60 2048:12
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/tune-recording.txt}
shift || true
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(2048:60 2048:12)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: > "$out"
for run in "${runs[@]}"; do
size=${run%%:*}
budget=${run##*:}
superopt new matmul M="$size" N="$size" K="$size" -o "$work/mm.pkl" >/dev/null
cmd=(superopt tune "$work/mm.pkl" --budget "$budget" --no-cache)
python3 - "$out" "$size" "$budget" "${cmd[@]}" <<'PY'
import fcntl, os, pty, re, struct, subprocess, sys, termios, time

out, size, budget, cmd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
master, slave = pty.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
t0 = time.monotonic()
proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
os.close(slave)
raw = b""
while True:
    try:
        chunk = os.read(master, 65536)
    except OSError:          # the child closed the terminal
        break
    if not chunk: break
    raw += chunk
status, wall = proc.wait(), time.monotonic() - t0
text = raw.decode("utf-8", "replace")
ansi = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")
lines, prev = [], None
for piece in re.split(r"\r\n|\r|\n|\x1b\[[0-9]*[AK]", text):   # a redraw starts a line anew
    line = ansi.sub("", piece).rstrip()
    if line and line != prev: lines.append(line)
    prev = line or prev
shown = " ".join("mm.pkl" if a.endswith("mm.pkl") else a for a in cmd)
head = [f"# superopt tune of an fp32 {size}^3 matmul on the cpu backend, recorded on a pseudo-terminal (120 x 30)",
        f"# by scripts/record_tune.sh: `superopt new matmul M={size} N={size} K={size} -o mm.pkl && {shown}`",
        f"# exit status {status}, {wall:.1f} s wall; ANSI codes stripped, one line per redraw of the progress bar,",
        "# consecutive repeats dropped; the machine (2 cores) was shared with other jobs while recording",
        ""]
with open(out, "a") as f: f.write(("\n" if f.tell() else "") + "\n".join(head + lines) + "\n")
print(f"wrote {out}: {len(lines)} lines, exit status {status}, {wall:.1f} s")
PY
done
