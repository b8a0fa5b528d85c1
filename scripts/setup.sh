#!/usr/bin/env bash
# Install everything pydiego needs on a fresh Debian 12 machine: system packages
# (etcd, runc, consul from the Debian 11 archive, haproxy, ssh, iproute2, iptables)
# and a Python virtual environment in .venv/ with pydiego installed (editable, with test extras).
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '[setup] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
for pair in etcd:etcd-server runc:runc haproxy:haproxy ssh:openssh-client sshd:openssh-server \
            ip:iproute2 bridge:iproute2 iptables:iptables busybox:busybox-static mkfs.ext4:e2fsprogs \
            losetup:mount docker-registry:docker-registry skopeo:skopeo umoci:umoci curl:curl nsenter:util-linux; do
  bin=${pair%%:*}; pkg=${pair#*:}
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/sbin/$bin" ] && [ ! -x "/bin/$bin" ]; then
    case " ${need_apt[*]} " in *" $pkg "*) ;; *) need_apt+=("$pkg") ;; esac
  fi
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ] || ! command -v consul >/dev/null 2>&1; then
  log "apt-get update"
  $SUDO apt-get update -qq
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # etcd-server's package may start a system etcd on a systemd host; tests use their own instances.
fi

# Consul is not in Debian 12: fetch the Debian 11 (bullseye) package and extract only its binary,
# so no bullseye source stays configured and nothing else from bullseye can be pulled in.
if ! command -v consul >/dev/null 2>&1; then
  log "installing consul from the Debian 11 archive"
  tmp=$(mktemp -d)
  src=/etc/apt/sources.list.d/pydiego-bullseye.list
  echo "deb http://deb.debian.org/debian bullseye main" | $SUDO tee "$src" >/dev/null
  $SUDO apt-get update -qq -o Dir::Etc::sourcelist="$src" -o Dir::Etc::sourceparts="-" -o APT::Get::List-Cleanup="0"
  (cd "$tmp" && apt-get download -qq consul/bullseye)
  $SUDO rm -f "$src"
  $SUDO apt-get update -qq
  dpkg -x "$tmp"/consul_*.deb "$tmp/x"
  $SUDO install -m 0755 "$tmp/x/usr/bin/consul" /usr/local/bin/consul
  rm -rf "$tmp"
fi

# Python environment.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.pydiego-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing pydiego into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[test]" 2>&1 | grep -v -E "^WARNING: Location|BuildBackendWarning|^ *$|^  " >&2 || true
  touch "$stamp"
fi

# The busybox stack every local-cluster cell offers (`preloaded:busybox`); built once.
stack=/var/lib/pydiego/stacks/busybox
if [ ! -f "$stack/etc/group" ]; then
  log "building the busybox stack in $stack"
  $SUDO .venv/bin/python -c "import sys; from agents.garden.stacks import build_busybox_stack; build_busybox_stack(sys.argv[1])" "$stack"
fi
log "ready: $(etcd --version 2>/dev/null | head -1); consul $(consul version | head -1); $(runc --version | head -1)"
