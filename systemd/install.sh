#!/usr/bin/env bash
# hftd as a systemd service: `make install` and `make uninstall` run this (README, "systemd").
#
#   install    a virtualenv $PREFIX/.venv holding hftd (a copy, not the checkout: the service
#              must not change when the checkout does); $SYSCONFDIR/$INSTANCE.toml from
#              configs/hftd.toml when it does not exist (an existing one is never touched);
#              the system user hftd; the unit $UNITDIR/hftd@.service with these paths;
#              $BINDIR/hftd -> the virtualenv's hftd; systemctl daemon-reload. Run it again
#              to upgrade: the same steps, each one idempotent.
#   uninstall  the unit, the virtualenv and the link. Configs, the state (/var/lib/hftd:
#              positions, order ids, working orders) and the user are kept (nothing that
#              cannot be rebuilt is lost), and the commands that remove them are printed.
#
# DESTDIR stages all of it under another root (tests, packaging): nothing outside that root is
# touched, so no user is created and systemd is not told. A virtualenv is not relocatable, so
# a staged one runs only where it was made. Creating the user needs root: as another user the
# other steps are done and the missing one is named.
set -euo pipefail
umask 022  # the venv and the unit must be readable by the service's user whatever root's umask
# the service's venv must not depend on how the caller's Python is set up (a PYTHONPATH with
# a checkout in it would make pip see hftd as installed already)
unset PYTHONPATH PYTHONHOME PYTHONUSERBASE PYTHONSTARTUP

action=${1:-}
SRC=$(cd "$(dirname "$0")/.." && pwd)
SERVICE_PYTHON=${SERVICE_PYTHON:-/usr/bin/python3}
PREFIX=${PREFIX:-/opt/hftd}
SYSCONFDIR=${SYSCONFDIR:-/etc/hftd}
UNITDIR=${UNITDIR:-/etc/systemd/system}
BINDIR=${BINDIR-/usr/local/bin}
INSTANCE=${INSTANCE:-default}
EXTRAS=${EXTRAS:-}
DESTDIR=${DESTDIR:-}
SERVICE_USER=hftd     # the unit's User= and Group=
STATE_BASE=/var/lib/hftd  # the unit's StateDirectory=hftd; the user's home

say() { echo "hftd $action: $*"; }
die() { echo "hftd $action: error: $*" >&2; exit 1; }
usage() { echo "systemd/install.sh: error: $*" >&2; exit 2; }

case $action in
  install|uninstall) ;;
  *) usage "usage: $0 install|uninstall (got '${action}'); settings in the environment: PREFIX, SYSCONFDIR, UNITDIR, BINDIR, INSTANCE, EXTRAS, SERVICE_PYTHON, DESTDIR" ;;
esac

# Paths go into the unit as they are: absolute, and no blank, quote, '%' (a unit specifier)
# or other character a unit file or sed would read differently.
for var in PREFIX SYSCONFDIR UNITDIR; do
  val=${!var}
  [[ $val == /* && $val =~ ^[A-Za-z0-9._/+-]+$ && $val != / ]] ||
    usage "$var must be an absolute path of letters, digits and . _ / + - (got '$val')"
done
[[ -z $BINDIR || ( $BINDIR == /* && $BINDIR =~ ^[A-Za-z0-9._/+-]+$ ) ]] ||
  usage "BINDIR must be an absolute path of letters, digits and . _ / + -, or empty for no link (got '$BINDIR')"
[[ -z $DESTDIR || $DESTDIR == /* ]] || usage "DESTDIR must be an absolute path (got '$DESTDIR')"
# hftd's own rule for instance names (config.py), which systemd accepts as an instance too
[[ $INSTANCE =~ ^[A-Za-z0-9_-]{1,40}$ ]] ||
  usage "INSTANCE must be 1 to 40 letters, digits, _ or - (got '$INSTANCE')"
[[ -z $EXTRAS || $EXTRAS =~ ^[A-Za-z0-9_,-]+$ ]] ||
  usage "EXTRAS must be a comma-separated list of hftd's extras, e.g. pfcf (got '$EXTRAS')"

venv=$DESTDIR$PREFIX/.venv
unit=$DESTDIR$UNITDIR/hftd@.service
link=${BINDIR:+$DESTDIR$BINDIR/hftd}
useradd_cmd="useradd --system --user-group --home-dir $STATE_BASE --no-create-home --shell /usr/sbin/nologin $SERVICE_USER"

# Only a real install as root changes the system's users and tells systemd.
system=no
if [[ -z $DESTDIR && $(id -u) == 0 ]]; then system=yes; fi
systemd_runs() { [[ $system == yes && -d /run/systemd/system ]]; }
# a directory that exists keeps its owner and mode (an admin's 0750 /etc/hftd, the system's
# /etc/systemd/system): only a missing one is made
make_dir() { [[ -d $1 ]] || install -d -m 0755 "$1"; }

# The service runs as $SERVICE_USER with ProtectHome=yes: an interpreter whose files live in
# /root or /home (pyenv, a user's own build) is invisible to it, and the unit could not start.
check_interpreter() {
  local py=$1 base
  base=$("$py" -c 'import sys; print(sys.base_prefix if sys.version_info >= (3, 11) else "old:" + sys.version.split()[0])') ||
    die "$py does not run"
  [[ $base != old:* ]] || die "$py is Python ${base#old:}; hftd needs >= 3.11 (set SERVICE_PYTHON=...)"
  base=$(readlink -m "$base")
  case $base/ in
    /root/*|/home/*|/run/user/*)
      die "$py runs the Python installed in $base, which the service cannot see (ProtectHome=yes) and user $SERVICE_USER cannot read; use a system-wide Python: make install SERVICE_PYTHON=/usr/bin/python3${2:+ (and remove $venv first)}" ;;
  esac
}

install_venv() {
  command -v "$SERVICE_PYTHON" >/dev/null ||
    die "no Python at $SERVICE_PYTHON (set SERVICE_PYTHON=...: a Python >= 3.11 with its venv module)"
  check_interpreter "$SERVICE_PYTHON"
  if [[ ! -x $venv/bin/python ]]; then
    "$SERVICE_PYTHON" -m venv "$venv" ||
      die "could not create the virtualenv $venv with $SERVICE_PYTHON (Debian: apt-get install python3-venv)"
  fi
  check_interpreter "$venv/bin/python" existing  # one made earlier by another Python
  local what=$SRC
  [[ -z $EXTRAS ]] || what="$SRC[$EXTRAS]"
  # not editable: the service runs this copy, whatever happens to the checkout later
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --upgrade "$what" || die "pip could not install hftd into $venv (see pip's message above)"
  say "hftd $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("hftd"))') installed in $venv"
}

create_user() {
  if [[ -n $DESTDIR ]]; then
    say "staged install (DESTDIR=$DESTDIR): the system user $SERVICE_USER is not created; on the target system, as root: $useradd_cmd"
  elif [[ $(id -u) != 0 ]]; then
    say "not root: the system user $SERVICE_USER was not created, and the unit runs as $SERVICE_USER; as root, run make install again, or: $useradd_cmd"
  elif getent passwd "$SERVICE_USER" >/dev/null; then
    say "user $SERVICE_USER exists"
  else
    command -v useradd >/dev/null || die "useradd is missing: cannot create the system user $SERVICE_USER"
    # --no-log-init: a system user needs no lastlog/faillog entries
    $useradd_cmd --no-log-init --comment "hftd trading daemon" || die "useradd could not create the user $SERVICE_USER"
    say "created the system user $SERVICE_USER (home $STATE_BASE, no login shell)"
  fi
}

install_config() {
  local dir=$DESTDIR$SYSCONFDIR conf=$DESTDIR$SYSCONFDIR/$INSTANCE.toml tmp
  make_dir "$dir"
  if [[ -e $conf || -L $conf ]]; then
    say "kept $conf (an existing config is never overwritten)"
  else
    tmp=$(mktemp "$dir/.$INSTANCE.toml.XXXXXX")
    sed "s/^instance = \"default\"/instance = \"$INSTANCE\"/" "$SRC/configs/hftd.toml" >"$tmp"
    if ! grep -qE "^instance = \"$INSTANCE\"( |$)" "$tmp"; then
      rm -f "$tmp"
      die "configs/hftd.toml has no line 'instance = \"default\"' to name the instance in"
    fi
    # readable by the service's group only: a config names risk limits, accounts, files
    chmod 0640 "$tmp"
    if [[ $system == yes ]] && getent group "$SERVICE_USER" >/dev/null; then
      chgrp "$SERVICE_USER" "$tmp"
    fi
    # a hard link fails if the name exists: a config that appeared meanwhile is not replaced
    if ln "$tmp" "$conf" 2>/dev/null; then
      say "wrote $conf (configs/hftd.toml, the embedded defaults, with instance = \"$INSTANCE\")"
    else
      say "kept $conf (it appeared meanwhile; an existing config is never overwritten)"
    fi
    rm -f "$tmp"
  fi
  if [[ $system == yes ]] && getent passwd "$SERVICE_USER" >/dev/null &&
     ! runuser -u "$SERVICE_USER" -- test -r "$conf"; then
    say "warning: user $SERVICE_USER cannot read $conf, so the instance cannot start: chgrp $SERVICE_USER $conf && chmod g+r $conf"
  fi
  # the config as hftd run will read it: from the config's directory (the unit's
  # WorkingDirectory, so relative paths in it mean the same), with a runtime directory of our
  # own, so that check is about the config, not about whoever runs make
  local rdir out abs
  rdir=$(mktemp -d)
  abs=$(realpath -- "$conf")
  if out=$(cd "$(dirname "$abs")" &&
           RUNTIME_DIRECTORY=$rdir "$venv/bin/hftd" check-config "$abs" 2>&1 >/dev/null); then
    say "$conf passes hftd check-config"
  else
    say "warning: $conf does not pass hftd check-config, the instance will not start until it does: $out"
  fi
  rmdir "$rdir"
}

# Every instance's /metrics on its own address: `make install INSTANCE=paper` writes the same
# [metrics] listen as default.toml, and the instance started second then serves no /metrics
# (a warning in its journal only), so Prometheus never sees it and no alert about it fires.
# Found when a second instance was installed as the README says. Said here, at install.
check_metrics_ports() {
  local out
  out=$("$venv/bin/python" - "$DESTDIR$SYSCONFDIR" <<'PY' 2>/dev/null
import glob, os, sys
from hftd import config

wild = ("", "0.0.0.0", "::")
seen = []  # (host, port, file)
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.toml"))):
    try:
        cfg = config.load(path)
        if not cfg.metrics.listen:
            continue
        host, port = cfg.metrics.address()
    except Exception:  # a config check-config refuses: said about it already
        continue
    for h, p, other in seen:
        if port and port == p and (host == h or host in wild or h in wild):
            print(f"{os.path.basename(other)} and {os.path.basename(path)} both serve "
                  f"/metrics on {cfg.metrics.listen} ([metrics] listen): the instance "
                  f"started second has none; give one of them another port")
    seen.append((host, port, path))
PY
) || return 0
  local line
  while IFS= read -r line; do
    [[ -z $line ]] || say "warning: $line"
  done <<<"$out"
}

install_unit() {
  local tmp
  make_dir "$DESTDIR$UNITDIR"
  tmp=$(mktemp "$DESTDIR$UNITDIR/.hftd@.service.XXXXXX")
  sed -e "s|/opt/hftd/|$PREFIX/|g" -e "s|/etc/hftd/|$SYSCONFDIR/|g" "$SRC/systemd/hftd@.service" >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$unit"
  say "unit $unit (ExecStart=$PREFIX/.venv/bin/hftd run --config $SYSCONFDIR/%i.toml --instance %i)"
}

install_link() {
  [[ -n $link ]] || return 0
  make_dir "$DESTDIR$BINDIR"
  if [[ -e $link && ! -L $link ]]; then
    say "warning: $link exists and is not a link: left as it is (the installed hftd is $PREFIX/.venv/bin/hftd)"
  else
    ln -sfn "$PREFIX/.venv/bin/hftd" "$link"
    say "link $link -> $PREFIX/.venv/bin/hftd"
  fi
}

daemon_reload() {
  if systemd_runs; then
    systemctl daemon-reload || die "systemctl daemon-reload failed"
    say "systemd reloaded its units"
  elif [[ $system == yes ]]; then
    say "systemd is not running here: nothing to reload"
  fi
}

running_instances() {
  systemd_runs || return 0
  systemctl list-units --plain --no-legend --state=active,activating,deactivating,reloading 'hftd@*' |
    awk '{print $1}'
}

# Every directory it writes, checked before anything is made: as a user who cannot write one
# of them (not root, no DESTDIR), it said "could not create the virtualenv ... (Debian:
# apt-get install python3-venv)", the wrong cause; with only some writable, it stopped
# half-way (a venv and no unit).
check_writable() {
  local dir probe
  for dir in "$DESTDIR$PREFIX" "$DESTDIR$SYSCONFDIR" "$DESTDIR$UNITDIR" ${link:+"$DESTDIR$BINDIR"}; do
    probe=$dir
    while [[ ! -e $probe ]]; do probe=$(dirname "$probe"); done
    [[ -d $probe && -w $probe ]] ||
      die "$probe is not writable by user $(id -un): run it as root (sudo make $action), or stage it with DESTDIR=/some/dir (nothing was changed)"
  done
}

if [[ $action == install ]]; then
  check_writable
  install_venv
  create_user
  install_config
  check_metrics_ports
  install_unit
  install_link
  daemon_reload
  if [[ $system == yes ]]; then
    say "done. Start it: systemctl enable --now hftd@$INSTANCE; its log: journalctl -u hftd@$INSTANCE"
  else
    say "done."
  fi
else
  live=$(running_instances)
  [[ -z $live ]] || die "still running: $(echo $live); stop them first: systemctl disable --now $(echo $live)"
  # what `systemctl disable` would remove: the enablement links of every instance
  for wants in "$DESTDIR$UNITDIR"/*.wants/hftd@*.service; do
    [[ -L $wants ]] || continue
    rm -f "$wants"
    say "removed $wants"
  done
  if [[ -e $unit ]]; then rm -f "$unit"; say "removed $unit"; fi
  if [[ -n $link && -L $link && $(readlink "$link") == "$PREFIX/.venv/bin/hftd" ]]; then
    rm -f "$link"
    say "removed $link"
  fi
  if [[ -d $venv ]]; then rm -rf "$venv"; say "removed $venv"; fi
  rmdir "$DESTDIR$PREFIX" 2>/dev/null || true
  daemon_reload
  say "kept the configs in $DESTDIR$SYSCONFDIR, the state in $DESTDIR$STATE_BASE (positions, order ids, working orders) and the user $SERVICE_USER; to remove them too: rm -r $DESTDIR$SYSCONFDIR $DESTDIR$STATE_BASE && userdel $SERVICE_USER"
fi
