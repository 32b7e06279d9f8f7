# Shell helpers of the vmha test guest (sourced).

# Messages go to the serial console, which the host writes to a file.
log() {
    echo "vmha-guest[$(cut -d' ' -f1 /proc/uptime)]: $*" > /dev/console
}

# /dev/virtio-ports/<name> -> ../vportNpM, as udev would make them.
link_ports() {
    mkdir -p /dev/virtio-ports
    for port in /sys/class/virtio-ports/vport*; do
        [ -r "$port/name" ] || continue
        name=$(cat "$port/name")
        [ -n "$name" ] || continue
        [ -e "/dev/virtio-ports/$name" ] ||
            ln -s "../${port##*/}" "/dev/virtio-ports/$name"
    done
}

# Wait until /dev/virtio-ports/$1 exists (the domain may not have it:
# then this waits for ever, cheaply).
wait_for_port() {
    while [ ! -e "/dev/virtio-ports/$1" ]; do
        sleep 1
        link_ports
    done
}
