"""vmha: VM high availability for libvirt/KVM compute hosts."""
