#!/usr/bin/env bash
# A new user's path on plain photos of real people: ORL's 92x112 PGM photos, never trained on by
# the real-faces model. Calibrate on 20 labelled people (s1-s20), then enrol each of the other 20
# (s21-s40) from three photos and verify two more of their photos against their own name
# (genuine) and against the next person's name (impostor), with the bundle's own operating point
# and with the calibrated one. Every decision is the CLI's (`nptface verify --json`, exit code 0
# match / 1 no match); the last lines count them.
#   benchmarks/orl_calibrate_demo.sh BUNDLE [WORKDIR]   (needs ../shared/data/orl_faces)
set -euo pipefail
BUNDLE=${1:?usage: orl_calibrate_demo.sh BUNDLE [WORKDIR]}
WORK=${2:-runs/orl-calibrate-demo}
ORL=${ORL:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data/orl_faces}  # ORL=DIR for a copy elsewhere
NPTFACE=${NPTFACE:-.venv/bin/nptface}
[ -d "$ORL" ] || { echo "$ORL: ORL faces not found" >&2; exit 2; }
rm -rf "$WORK" && mkdir -p "$WORK/calibration"
for i in $(seq 1 20); do ln -s "$ORL/s$i" "$WORK/calibration/s$i"; done
cp -r "$BUNDLE" "$WORK/bundle"   # calibrate adds an operating point to the bundle: work on a copy
$NPTFACE calibrate --bundle "$WORK/bundle" --data "$WORK/calibration" --align --name orl-s1-s20
: > "$WORK/decisions.jsonl"
for i in $(seq 21 40); do
    $NPTFACE enroll --gallery "$WORK/gallery.npz" --bundle "$WORK/bundle" --name "s$i" \
        "$ORL/s$i/1.pgm" "$ORL/s$i/2.pgm" "$ORL/s$i/3.pgm" > /dev/null
done
for i in $(seq 21 40); do
    other=$(( i == 40 ? 21 : i + 1 ))
    for point in export orl-s1-s20; do
        for photo in 5 9; do
            for claim in "s$i" "s$other"; do
                kind=$([ "$claim" = "s$i" ] && echo genuine || echo impostor)
                set +e
                $NPTFACE verify --gallery "$WORK/gallery.npz" --name "$claim" --operating-point "$point" \
                    --json "$ORL/s$i/$photo.pgm" > "$WORK/verify.json" 2> "$WORK/verify.err"
                rc=$?
                set -e
                [ $rc -le 1 ] || { echo "verify failed ($rc) on s$i/$photo.pgm claimed as $claim:" >&2; cat "$WORK/verify.err" >&2; exit 2; }
                python3 -c 'import json, sys; print(json.dumps({"point": sys.argv[1], "kind": sys.argv[2], "exit": int(sys.argv[3]), "cli": json.load(open(sys.argv[4]))}))' \
                    "$point" "$kind" "$rc" "$WORK/verify.json" >> "$WORK/decisions.jsonl"
            done
        done
    done
done
python3 - "$WORK/decisions.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for point in dict.fromkeys(r["point"] for r in rows):
    mine = [r for r in rows if r["point"] == point]
    threshold = mine[0]["cli"]["threshold"]
    for kind in ("genuine", "impostor"):
        some = [r for r in mine if r["kind"] == kind]
        accepted = sum(r["exit"] == 0 for r in some)
        print(f"{point:12s} threshold {threshold:.4f}  {kind:8s} accepted {accepted}/{len(some)}")
PY
