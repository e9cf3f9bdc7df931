#!/usr/bin/env bash
# Fuzz smoke run: builds every cargo-fuzz target in fuzz/ and runs each one for
# a short, fixed time, starting from seeds cut out of the committed test
# vectors (format-spec/vectors/*.json). Exits non-zero if any target crashes,
# panics, leaks past the memory limit or hangs on one input.
#
#   scripts/fuzz-smoke.sh [TARGET...]     (default: every target)
#
# Environment:
#   FUZZ_SECONDS=N   seconds per target (default 20)
#
# Installs cargo-fuzz from crates.io when it is missing. Builds on the stable
# toolchain with `--sanitizer none`: nfrepo-format forbids unsafe code, so
# AddressSanitizer (which needs nightly) would add little; debug assertions
# and overflow checks stay on. Corpora grow in fuzz/corpus/<target> and
# crashing inputs land in fuzz/artifacts/<target> (both git-ignored); replay
# one with `cargo fuzz run --sanitizer none <target> <file>` from fuzz/.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$NFREPO_ROOT/fuzz"

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
[[ "$FUZZ_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a positive whole number, got '$FUZZ_SECONDS'"

if ! cargo fuzz --version >/dev/null 2>&1; then
	log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
	cargo install cargo-fuzz --locked
fi

FUZZ_FLAGS=(--sanitizer none)

if (($# > 0)); then
	TARGETS=("$@")
else
	mapfile -t TARGETS < <(cargo fuzz list)
fi
((${#TARGETS[@]} > 0)) || die "no fuzz targets found"

log "building ${#TARGETS[@]} fuzz targets"
cargo fuzz build "${FUZZ_FLAGS[@]}"

log "seeding corpora from format-spec/vectors"
python3 - ../format-spec/vectors corpus <<'PY'
"""Cuts seeds for each fuzz target out of the vector files.

Each seed starts with the target's mode byte (see fuzz/fuzz_targets/*.rs):
bit 0 clear feeds a stored object as is, bit 0 set a plaintext body that the
target seals itself; bit 1 picks AES-256-GCM over XChaCha20-Poly1305.
"""
import hashlib, json, os, struct, sys

vectors, corpus = sys.argv[1], sys.argv[2]
load = lambda name: json.load(open(os.path.join(vectors, name)))
objects, plain, sealing = load("objects.json"), load("plaintexts.json"), load("sealing.json")
h = bytes.fromhex
seeds = {t: [] for t in ("key_slot", "pack_trailer", "index_delta", "snapshot", "config", "tree", "content_list", "blob",
                         "gc_plan", "session_marker", "lease", "protect_marker", "good_marker", "replica_state", "drill_record", "audit_entry")}
cipher_bit = {"xchacha20poly1305": 0, "aes256gcm": 2}
kind_index = {"data": 0, "tree": 1, "content_list": 2}

seeds["key_slot"].append(h(objects["key_slot"]["bytes"]))
for pack in objects["packs"]:
    raw = h(pack["bytes"])
    tlen = struct.unpack("<I", raw[-4:])[0]
    blobs = raw[8 : len(raw) - 4 - tlen]
    kind_code = raw[5]
    seeds["pack_trailer"].append(bytes([cipher_bit[pack["cipher"]]]) + raw)
    seeds["pack_trailer"].append(
        bytes([1 | cipher_bit[pack["cipher"]] | kind_code << 2]) + struct.pack("<H", len(blobs)) + blobs + h(pack["trailer_body"])
    )
    for entry in pack["entries"]:
        sealed = raw[entry["offset"] : entry["offset"] + entry["sealed_len"]]
        seeds["blob"].append(bytes([3 * kind_index[entry["kind"]]]) + h(entry["id"]) + struct.pack("<I", entry["raw_len"]) + sealed)
for obj, target in [(objects["index"], "index_delta")] + [(s, "snapshot") for s in objects["snapshots"]]:
    bit = cipher_bit[obj["cipher"]]
    seeds[target] += [bytes([bit]) + h(obj["bytes"]), bytes([bit | 1]) + h(obj["body"])]
for config in objects["configs"]:
    seeds["config"] += [b"\x00" + h(config["bytes"]), bytes([1 | cipher_bit[config["cipher"]]]) + h(config["body"])]
for target, encoded in [("tree", plain["tree"]), ("tree", plain["empty_tree"]), ("content_list", plain["content_list"])]:
    text = h(encoded["plaintext"])
    seeds[target] += [b"\x00" + text, b"\x01" + text[5:]]
for blob in sealing["blobs"]:
    mode = 3 * kind_index[blob["kind"]] + (9 if blob["cipher"] == "aes256gcm" else 0)
    seeds["blob"].append(bytes([mode]) + h(blob["id"]) + struct.pack("<I", blob["raw_len"]) + h(blob["sealed"]))
    seeds["blob"].append(bytes([mode + 1]) + struct.pack("<I", blob["raw_len"]) + h(blob["frame"]))
    seeds["blob"].append(bytes([mode + 2]) + h(blob["plaintext"]))
# Older layouts of an object (`session_marker_v1`) seed the same target.
for obj in load("maintenance.json")["objects"]:
    bit = cipher_bit[obj["cipher"]]
    target = obj["object"].removesuffix("_v1")
    seeds[target] += [bytes([bit]) + h(obj["bytes"]), bytes([bit | 1]) + h(obj["body"])]

# Audit entries: the stored entries (raw) and their bodies (sealed, with and without MAC).
for entry in load("audit.json")["entries"]:
    bit = cipher_bit[entry["cipher"]]
    seeds["audit_entry"] += [bytes([bit]) + h(entry["bytes"]), bytes([bit | 1]) + h(entry["body"]), bytes([bit | 5]) + h(entry["body"])]

# The replica state is plain: the stored object, and its body for the built mode.
replica = load("replication.json")
seeds["replica_state"] += [b"\x00" + h(replica["bytes"]), b"\x01" + h(replica["body"])]

# The cached unlock: the stored file, and its plaintext body for the sealing mode.
unlock = load("unlock.json")
seeds["unlock_cache"] = [b"\x00" + h(unlock["bytes"]), b"\x01" + h(unlock["body"])]

# check_repository mutates a repository it builds itself: seed one mutation
# of each kind (flip, truncate, delete, replace) over a spread of objects.
seeds["check_repository"] = [
    bytes([op, obj, 0x2c, 0x01, 0, 0, 0x40, 0]) + (b"NFRS\x01" if op == 3 else b"")
    for op in range(4)
    for obj in range(0, 16, 3)
]

for target, items in seeds.items():
    os.makedirs(os.path.join(corpus, target), exist_ok=True)
    for item in items:
        name = "seed-" + hashlib.sha256(item).hexdigest()[:16]
        with open(os.path.join(corpus, target, name), "wb") as f:
            f.write(item)
PY

LOGS="$(mktemp -d "${TMPDIR:-/tmp}/nfrepo-fuzz.XXXXXX")"
FAILED=()
for target in "${TARGETS[@]}"; do
	log "fuzzing $target for ${FUZZ_SECONDS}s"
	mkdir -p "corpus/$target"
	# -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a decoder
	# must not be talked into allocating gigabytes.
	if ! cargo fuzz run "${FUZZ_FLAGS[@]}" "$target" -- \
		-max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$LOGS/$target.log" 2>&1; then
		tail -n 40 "$LOGS/$target.log" >&2
		FAILED+=("$target")
	else
		grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$LOGS/$target.log" | tail -n 1 >&2 || true
	fi
done

if ((${#FAILED[@]} > 0)); then
	die "fuzz targets failed: ${FAILED[*]} (inputs in fuzz/artifacts/<target>/, logs in $LOGS)"
fi
rm -rf "$LOGS"
log "fuzz smoke run passed: ${TARGETS[*]}"
