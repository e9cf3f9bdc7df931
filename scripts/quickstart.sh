#!/usr/bin/env bash
# Builds nfrepo and backs up a directory into a local repository.
#
#   scripts/quickstart.sh [PATH...]      (default PATH: this repository's crates/)
#
# The repository is ./.nfrepo-quickstart/repo (created on the first run). The
# password is $NFREPO_PASSWORD when set; otherwise one is generated once into
# ./.nfrepo-quickstart/password and passed with --password-file. Every run adds
# one snapshot; unchanged files are deduplicated.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Paths given on the command line are relative to where the user stands.
paths=()
if (($# > 0)); then
	for p in "$@"; do
		[[ -e "$p" ]] || die "no such file or directory: $p"
		paths+=("$(realpath -s -- "$p")")
	done
else
	paths=("$NFREPO_ROOT/crates")
fi

cd "$NFREPO_ROOT"
QS_DIR="$NFREPO_ROOT/.nfrepo-quickstart"
REPO_DIR="$QS_DIR/repo"
REPO_URL="file://$REPO_DIR"

log "building nfrepo (cargo build --profile dist -p nfrepo-cli: release with LTO, as operators run it)"
cargo build --profile dist -p nfrepo-cli
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
	python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
NFREPO="$TARGET_DIR/dist/nfrepo"
[[ -x "$NFREPO" ]] || die "build finished but $NFREPO is missing"

mkdir -p "$QS_DIR"
# Only the command line decides the repository and password here.
unset NFREPO_REPOSITORY NFREPO_PASSWORD_FILE
pw_args=()
if [[ -n "${NFREPO_PASSWORD:-}" ]]; then
	pw_hint="export NFREPO_PASSWORD=...   # the password you used"
	export NFREPO_PASSWORD
else
	if [[ ! -s "$QS_DIR/password" ]]; then
		(
			umask 077
			python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$QS_DIR/password"
		)
		log "generated a password into $QS_DIR/password"
	fi
	pw_args=(--password-file "$QS_DIR/password")
	pw_hint="export NFREPO_PASSWORD_FILE=$QS_DIR/password"
fi

nfrepo() {
	echo "+ nfrepo $*" >&2
	"$NFREPO" --repo "$REPO_URL" "${pw_args[@]}" "$@"
}

if [[ -d "$REPO_DIR" ]] && [[ -n "$(ls -A "$REPO_DIR")" ]]; then
	log "repository $REPO_URL exists: not initialising it again"
else
	nfrepo init
fi

nfrepo snapshot "${paths[@]}"
nfrepo snapshots

cat <<EOF

Done. To look at and restore the newest snapshot:

  export NFREPO_REPOSITORY=$REPO_URL
  $pw_hint
  $NFREPO snapshots
  $NFREPO ls latest
  $NFREPO restore latest --target /tmp/nfrepo-restore --verify

EOF
