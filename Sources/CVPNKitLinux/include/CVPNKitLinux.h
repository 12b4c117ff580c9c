#ifndef SWIFTVPNKIT_CVPNKITLINUX_H
#define SWIFTVPNKIT_CVPNKITLINUX_H

/// Opens /dev/net/tun inside the network namespace at `netns_path` (NULL: the caller's own) and
/// attaches to, or creates, the TAP device `name` with IFF_TAP | IFF_NO_PI (plus IFF_VNET_HDR when
/// `vnet_hdr` is non-zero). Only the calling thread changes namespace, and it is switched back before
/// returning. On success returns the fd (blocking mode is left to the caller) and writes the device
/// name (at most 15 bytes + NUL) to `name_out`; on failure returns -1 with errno set, and writes the
/// failing step to `*step` ("open netns", "setns", "open /dev/net/tun", "TUNSETIFF", "setns back").
int vpnkit_open_tap(const char *netns_path, const char *name, int vnet_hdr, char name_out[16], const char **step);

/// setns(2) for a network namespace fd.
int vpnkit_setns_net(int fd);

#endif
