"""The libvirt virt driver.  Only ``api`` imports the libvirt binding."""
