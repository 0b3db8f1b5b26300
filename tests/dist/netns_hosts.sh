#!/usr/bin/env bash
# Two "hosts" on this machine for multi-node MPI tests: two network namespaces, each holding one end
# of a veth pair whose other end is on a bridge in the root namespace (bridge .1, hosts .11 and
# .12 of a 10.77.X.0/24 subnet no other interface here uses), and an rsh agent for mpirun that
# runs its command inside the namespace that owns the address it is given. Needs root and `ip`.
#   netns_hosts.sh up TAG DIR    make them; writes DIR/agent, DIR/subnet (10.77.X.0/24) and
#                                DIR/hosts (the two addresses); on failure removes what it made
#   netns_hosts.sh down TAG      remove everything TAG made (namespaces, veths, bridge); never fails
# TAG (e.g. the test's pid, at most 7 characters) keeps parallel runs apart: interface names are
# "sftb<TAG>" (bridge) and "sftv<TAG><a|b>" (the root ends of the veth pairs).
set -u

down() {
  local tag=$1
  for h in a b; do
    ip link del "sftv${tag}${h}" 2>/dev/null
    ip netns del "sft${tag}${h}" 2>/dev/null
  done
  ip link del "sftb${tag}" 2>/dev/null
  return 0
}

up() {
  local tag=$1 dir=$2
  [ "$(id -u)" = 0 ] || { echo "netns_hosts: not root"; return 1; }
  command -v ip >/dev/null || { echo "netns_hosts: no ip (iproute2)"; return 1; }
  [ ${#tag} -le 7 ] || { echo "netns_hosts: TAG '$tag' longer than 7 characters"; return 1; }
  # A subnet no route here uses yet (parallel runs take different ones).
  local x=$(( (tag % 200) + 20 )) tries=0
  while ip route show | grep -q "^10\.77\.${x}\."; do
    x=$(( (x + 1) % 250 + 1 )); tries=$((tries + 1))
    [ $tries -lt 250 ] || { echo "netns_hosts: no free 10.77.X.0/24 subnet"; return 1; }
  done
  local net="10.77.${x}" br="sftb${tag}"
  trap 'down "$tag"' ERR
  set -e
  ip link add "$br" type bridge
  ip addr add "${net}.1/24" dev "$br"
  ip link set "$br" up
  local n=11
  for h in a b; do
    ip netns add "sft${tag}${h}"
    ip link add "sftv${tag}${h}" type veth peer name eth0 netns "sft${tag}${h}"
    ip link set "sftv${tag}${h}" master "$br" up
    ip -n "sft${tag}${h}" addr add "${net}.${n}/24" dev eth0
    ip -n "sft${tag}${h}" link set eth0 up
    ip -n "sft${tag}${h}" link set lo up
    n=$((n + 1))
  done
  set +e
  trap - ERR
  mkdir -p "$dir"
  echo "${net}.0/24" > "$dir/subnet"
  echo "${net}.11 ${net}.12" > "$dir/hosts"
  # mpirun calls the agent as `agent HOST COMMAND...` (as it would ssh). Both "hosts" share /tmp
  # and the hostname, so each gets its own OpenMPI session directory (else the daemons collide).
  mkdir -p "$dir/tmp-a" "$dir/tmp-b"
  cat > "$dir/agent" <<AGENT
#!/usr/bin/env bash
host=\$1; shift
case "\$host" in
  ${net}.11) h=a ;;
  ${net}.12) h=b ;;
  *) echo "netns agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "sft${tag}\$h" env OMPI_MCA_orte_tmpdir_base="$dir/tmp-\$h" bash -c "\$*"
AGENT
  chmod +x "$dir/agent"
}

case "${1:-}" in
  up) [ $# -eq 3 ] || { echo "usage: $0 up TAG DIR"; exit 2; }; up "$2" "$3" || { down "$2"; exit 1; } ;;
  down) [ $# -eq 2 ] || { echo "usage: $0 down TAG"; exit 2; }; down "$2" ;;
  *) echo "usage: $0 up TAG DIR | down TAG"; exit 2 ;;
esac
