//! Ephemeral storage for image layers and container rootfs (to be filled in).
