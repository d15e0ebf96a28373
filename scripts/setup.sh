#!/usr/bin/env bash
# Set up a visft checkout: Node dependencies, the TypeScript build, and a working WebGPU adapter.
#
#   bash scripts/setup.sh          set up only
#   bash scripts/setup.sh test     set up, then run the test suite (npm test)
#   bash scripts/setup.sh demo     set up, then make the demo data and train the built-in demo pipeline
#
# Idempotent, and quiet when there is nothing to do. On Debian and Ubuntu, when run as root (or with
# passwordless sudo), it installs the software Vulkan driver (Mesa lavapipe) if no WebGPU adapter works:
# Debian 12's own Mesa (22.3) is rejected by Dawn, so there it comes from ${VERSION_CODENAME}-backports.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

usage() {
  printf 'usage: bash scripts/setup.sh [test|demo]\n' >&2
  exit 2
}

action="${1:-}"
case "$action" in
  ''|test|demo) ;;
  -h|--help) usage ;;
  *) usage ;;
esac
[[ $# -le 1 ]] || usage

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# ---------------------------------------------------------------------------------------------------------
# (a) Node.js >= 20 and npm
# ---------------------------------------------------------------------------------------------------------
node_hint() {
  cat >&2 <<'EOF'
setup: install Node.js 20 or newer together with npm, then rerun this script:
  Debian/Ubuntu: Debian 12's own `nodejs` package is 18 (too old); use NodeSource's node_20.x (or newer)
                 repository, or nvm: `nvm install 20`
  macOS:         brew install node@20      (or nvm: `nvm install 20`)
  Fedora:        dnf install nodejs npm   (Fedora 39+ ships 20+)
  Arch:          pacman -S nodejs npm
EOF
}
if ! command -v node >/dev/null 2>&1; then
  say "Node.js not found"
  node_hint
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [[ ! "$node_major" =~ ^[0-9]+$ ]] || (( node_major < 20 )); then
  say "Node.js $(node --version 2>/dev/null || echo '?') is too old (need >= 20)"
  node_hint
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  say "npm not found (Node.js $(node --version) is installed without it)"
  node_hint
  exit 1
fi

# ---------------------------------------------------------------------------------------------------------
# (b) npm dependencies and the TypeScript build
# ---------------------------------------------------------------------------------------------------------
stamp="dist/.setup-build-stamp"

build_is_stale() {
  [[ -f "$stamp" && -f dist/runtime/device/probe-main.js ]] || return 0
  local newer
  newer="$(find . \( -path ./node_modules -o -path ./dist -o -path ./.git -o -path ./.gpu \) -prune -o \
    \( -name '*.ts' -o -name '*.mts' -o -name 'tsconfig*.json' -o -name package.json \) \
    -newer "$stamp" -print -quit)"
  [[ -n "$newer" ]]
}

mark_built() { mkdir -p dist && touch "$stamp"; }

if [[ ! -d node_modules ]] || [[ ! -f node_modules/.package-lock.json ]] \
   || { [[ -f package-lock.json ]] && [[ package-lock.json -nt node_modules/.package-lock.json ]]; }; then
  if [[ -f package-lock.json ]]; then
    say "installing npm dependencies (npm ci; its prepare step builds dist/)"
    npm ci --no-audit --no-fund --loglevel=error </dev/null || die "npm ci failed (see above)"
  else
    say "installing npm dependencies (npm install: there is no package-lock.json)"
    npm install --no-audit --no-fund --loglevel=error </dev/null || die "npm install failed (see above)"
  fi
  # npm ci/install runs the `prepare` script, which is the TypeScript build.
  if [[ -f dist/runtime/device/probe-main.js ]]; then
    mark_built
  fi
fi

if build_is_stale; then
  say "building TypeScript (tsc -p tsconfig.json)"
  npx --no-install tsc -p tsconfig.json </dev/null || die "the TypeScript build failed (see above)"
  mark_built
fi

# ---------------------------------------------------------------------------------------------------------
# (c) a working WebGPU adapter
# ---------------------------------------------------------------------------------------------------------
if [[ -z "${XDG_RUNTIME_DIR:-}" || ! -d "${XDG_RUNTIME_DIR}" || ! -w "${XDG_RUNTIME_DIR}" ]]; then
  XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/visft-runtime-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR"
  chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
  export XDG_RUNTIME_DIR
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/visft-setup.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

probe_json=""
probe_err=""
# Runs the probe; sets probe_json and probe_err; returns the probe's exit status.
probe() {
  local rc=0
  node dist/runtime/device/probe-main.js --json >"$tmp/probe.json" 2>"$tmp/probe.err" </dev/null || rc=$?
  probe_json="$(cat "$tmp/probe.json")"
  probe_err="$(cat "$tmp/probe.err")"
  return "$rc"
}

# One field of the probe's JSON, formatted for a progress line.
probe_field() {
  PROBE_JSON="$probe_json" node -e '
    let r = {};
    try { r = JSON.parse(process.env.PROBE_JSON || "{}"); } catch { r = { error: "the probe printed no JSON" }; }
    const a = r.adapter || {};
    if (process.argv[1] === "adapter") {
      const name = a.name || a.device || a.description || "unnamed adapter";
      const kind = a.isFallbackAdapter ? "software" : "hardware";
      console.log(`${name} (${kind}${r.backend ? ", " + r.backend : ""})`);
    } else {
      console.log(r.error || "unknown error");
    }' "$1"
}

probe_reason() {
  local reason
  reason="$(probe_field error)"
  if [[ -z "$probe_json" && -n "$probe_err" ]]; then reason="$(printf '%s' "$probe_err" | tail -n 3)"; fi
  printf '%s' "$reason"
}

# --- apt sources (Debian): find the URI of the main entry for a suite, in deb822 or one-line format -------
# Prints "URI<TAB>SIGNED_BY" (SIGNED_BY may be empty) of the first enabled `deb` entry whose suites include $1.
apt_entry_for_suite() {
  local want="$1" f
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    awk -v want="$want" '
      function flush() {
        if (!found && uris != "" && enabled != "no" && index(" " types " ", " deb ") && index(" " suites " ", " " want " ")) {
          n = split(uris, u, " ")
          for (i = 1; i <= n; i++) if (u[i] !~ /^cdrom:/) { print u[i] "\t" signed; found = 1; break }
        }
        types = ""; suites = ""; uris = ""; signed = ""; enabled = "yes"
      }
      BEGIN { enabled = "yes" }
      /^#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { next }  # continuation line (e.g. an embedded key): not needed here
      {
        key = $0; sub(/:.*/, "", key); key = tolower(key)
        val = $0; sub(/^[^:]*:[ \t]*/, "", val); gsub(/[ \t]+/, " ", val); sub(/ $/, "", val)
        if (key == "types") types = val
        else if (key == "suites") suites = val
        else if (key == "uris") uris = val
        else if (key == "enabled") enabled = tolower(val)
        else if (key == "signed-by" && val ~ /^\//) signed = val
      }
      END { flush(); if (found) exit 0; exit 1 }
    ' "$f" && { shopt -u nullglob; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    awk -v want="$want" '
      /^[ \t]*#/ { next }
      $1 == "deb" {
        i = 2; signed = ""
        if ($i ~ /^\[/) {
          opts = ""
          while (i <= NF) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } i++ }
          gsub(/[\[\]]/, " ", opts)
          n = split(opts, o, " ")
          for (k = 1; k <= n; k++) if (o[k] ~ /^signed-by=/) { signed = substr(o[k], 11) }
        }
        uri = $i; suite = $(i + 1)
        if (suite == want && uri !~ /^cdrom:/) { print uri "\t" signed; found = 1; exit 0 }
      }
      END { if (found) exit 0; exit 1 }
    ' "$f" && { shopt -u nullglob; return 0; }
  done
  shopt -u nullglob
  return 1
}

SUDO=()
can_admin() {
  if [[ "$(id -u)" -eq 0 ]]; then SUDO=(); return 0; fi
  if command -v sudo >/dev/null 2>&1 && sudo -n true </dev/null >/dev/null 2>&1; then SUDO=(sudo -n); return 0; fi
  return 1
}

apt_get() {
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a \
    apt-get -q -y -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" \
    </dev/null >>"$tmp/apt.log" 2>&1 || {
      printf 'setup: apt-get %s failed; the end of its log:\n' "$*" >&2
      tail -n 25 "$tmp/apt.log" >&2
      exit 1
    }
}

os_id=""; os_like=""; os_codename=""; os_version=""
if [[ -r /etc/os-release ]]; then
  # shellcheck disable=SC1091
  eval "$(. /etc/os-release >/dev/null 2>&1; printf 'os_id=%q os_like=%q os_codename=%q os_version=%q' \
    "${ID:-}" "${ID_LIKE:-}" "${VERSION_CODENAME:-}" "${VERSION_ID:-}")"
fi
is_ubuntu_like() { [[ "$os_id" == ubuntu || " $os_like " == *" ubuntu "* ]]; }
is_debian() { [[ "$os_id" == debian ]]; }
# Debian before 13 has a Mesa older than 25 in its main suite: lavapipe must come from backports.
debian_needs_backports() { is_debian && [[ "$os_version" =~ ^[0-9]+$ ]] && (( os_version < 13 )); }

print_manual_instructions() {
  local reason="$1"
  printf 'setup: no working WebGPU adapter: %s\n' "$reason" >&2
  if [[ "$(uname -s)" == Darwin ]]; then
    cat >&2 <<'EOF'
setup: on macOS, Dawn uses Metal; it needs macOS 11 or newer on a Metal-capable Mac. Check that
       `node dist/runtime/device/probe-main.js` works outside any sandbox/VM without GPU access.
EOF
  elif is_debian || is_ubuntu_like; then
    local pre=""
    [[ "$(id -u)" -eq 0 ]] || pre="sudo "
    printf 'setup: rerun this script as root (or with passwordless sudo), or run these commands yourself:\n' >&2
    if debian_needs_backports && [[ -n "$os_codename" ]]; then
      local entry uri
      entry="$(apt_entry_for_suite "$os_codename" || true)"
      uri="${entry%%$'\t'*}"
      [[ -n "$uri" ]] || uri="<the URI of your ${os_codename} entry in /etc/apt/sources.list.d/>"
      if ! apt_entry_for_suite "${os_codename}-backports" >/dev/null; then
        printf '  printf "Types: deb\\nURIs: %s\\nSuites: %s-backports\\nComponents: main\\n" | %stee /etc/apt/sources.list.d/%s-backports.sources\n' \
          "$uri" "$os_codename" "$pre" "$os_codename" >&2
      fi
      printf '  %sapt-get update\n  %sapt-get install -y -t %s-backports mesa-vulkan-drivers libvulkan1\n' \
        "$pre" "$pre" "$os_codename" >&2
    else
      printf '  %sapt-get update\n  %sapt-get install -y mesa-vulkan-drivers libvulkan1\n' "$pre" "$pre" >&2
    fi
  else
    cat >&2 <<'EOF'
setup: install the Vulkan loader and Mesa's software Vulkan driver (lavapipe), Mesa 25 or newer
       (older lavapipe is rejected by Dawn), or a GPU's Vulkan driver. For example:
  Fedora: dnf install vulkan-loader mesa-vulkan-drivers
  Arch:   pacman -S vulkan-icd-loader vulkan-swrast
  Alpine: apk add vulkan-loader mesa-vulkan-swrast
  openSUSE: zypper install libvulkan1 Mesa-vulkan-device-select libvulkan_lvp
EOF
  fi
}

install_lavapipe() {
  if debian_needs_backports; then
    [[ -n "$os_codename" ]] || die "cannot tell the Debian codename from /etc/os-release"
    local suite="${os_codename}-backports"
    if ! apt_entry_for_suite "$suite" >/dev/null; then
      local entry uri signed file
      entry="$(apt_entry_for_suite "$os_codename")" \
        || die "found no apt source for '${os_codename}' in /etc/apt/sources.list{,.d/} to derive the ${suite} mirror from"
      uri="${entry%%$'\t'*}"
      signed="${entry#*$'\t'}"
      file="/etc/apt/sources.list.d/${suite}.sources"
      say "adding apt suite ${suite} (${uri}) in ${file}"
      {
        printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n' "$uri" "$suite"
        [[ -z "$signed" ]] || printf 'Signed-By: %s\n' "$signed"
      } >"$tmp/backports.sources"
      "${SUDO[@]}" install -m 0644 "$tmp/backports.sources" "$file"
    fi
    say "installing Mesa lavapipe from ${suite} (apt-get install -t ${suite} mesa-vulkan-drivers libvulkan1)"
    apt_get update
    apt_get install -t "$suite" mesa-vulkan-drivers libvulkan1
  else
    say "installing Mesa lavapipe (apt-get install mesa-vulkan-drivers libvulkan1)"
    apt_get update
    apt_get install mesa-vulkan-drivers libvulkan1
  fi
  local v
  v="$(dpkg-query -W -f '${Version}' mesa-vulkan-drivers 2>/dev/null || true)"
  [[ -z "$v" ]] || say "installed mesa-vulkan-drivers ${v}"
}

if ! probe; then
  reason="$(probe_reason)"
  if [[ "$(uname -s)" == Linux ]] && { is_debian || is_ubuntu_like; } && command -v apt-get >/dev/null 2>&1 && can_admin; then
    say "no working WebGPU adapter (${reason})"
    install_lavapipe
    if ! probe; then
      reason="$(probe_reason)"
      printf 'setup: still no working WebGPU adapter after installing Mesa lavapipe: %s\n' "$reason" >&2
      [[ -z "$probe_err" ]] || printf 'setup: probe stderr:\n%s\n' "$probe_err" >&2
      printf 'setup: mesa-vulkan-drivers %s, libvulkan1 %s (Dawn needs Mesa >= 25)\n' \
        "$(dpkg-query -W -f '${Version}' mesa-vulkan-drivers 2>/dev/null || echo 'not installed')" \
        "$(dpkg-query -W -f '${Version}' libvulkan1 2>/dev/null || echo 'not installed')" >&2
      exit 1
    fi
  else
    print_manual_instructions "$reason"
    exit 1
  fi
fi
say "WebGPU adapter: $(probe_field adapter)"

# ---------------------------------------------------------------------------------------------------------
# (d) optional action
# ---------------------------------------------------------------------------------------------------------
case "$action" in
  test)
    say "running the tests (npm test)"
    npm test </dev/null
    ;;
  demo)
    say "running the demo: make its data, then train pipelines/demo.visft (stage 1 caption head, stage 2 LoRA)"
    node bin/visft.js make-demo-data demo-data </dev/null
    # A fresh run every time: the previous one (if any) moves aside instead of being overwritten.
    if [ -d runs/demo-train ]; then rm -rf runs/demo-train.previous && mv runs/demo-train runs/demo-train.previous; fi
    VISFT_DEMO_DATA=demo-data VISFT_OUT=runs node bin/visft.js train pipelines/demo.visft --out runs/demo-train </dev/null
    say "done: metrics in runs/demo-train/metrics.jsonl, loss curves in runs/demo-train/stage{1,2}/loss.svg, LoRA exports in runs/demo/"
    ;;
esac
