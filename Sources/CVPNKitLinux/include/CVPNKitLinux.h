#ifndef SWIFTVPNKIT_CVPNKITLINUX_H
#define SWIFTVPNKIT_CVPNKITLINUX_H

// Linux only: elsewhere the module is empty (and no target depends on it there, see Package.swift).
#ifdef __linux__

// epoll and eventfd, for VPNKitSystem (Swift's Glibc module does not bring these headers in).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

/// accept4(2), which glibc declares only with _GNU_SOURCE.
int vpnkit_accept4(int fd, struct sockaddr *address, socklen_t *length, int flags);

/// Names the calling thread (at most 15 bytes are kept), for ps and perf.
void vpnkit_name_thread(const char *name);

/// Opens /dev/net/tun inside the network namespace at `netns_path` (NULL: ours) and attaches to, or
/// creates, the TAP device `name` with IFF_TAP | IFF_NO_PI (plus IFF_VNET_HDR when `vnet_hdr` is
/// non-zero); blocking mode is left to the caller, and the device name (at most 15 bytes + NUL) is
/// written to `name_out`. A short-lived child (sharing our memory and descriptor table, nothing
/// else) enters the user namespace at `userns_path` (NULL, or the one we are in: none entered) and
/// then the network namespace, and opens the TAP there; none of our threads changes namespace. An
/// unprivileged daemon can so serve a namespace its own user namespace owns. Returns the fd or -1
/// with errno set and the failing step in `*step` ("open user namespace", "setns user namespace",
/// "open network namespace", "setns network namespace", "open /dev/net/tun", "TUNSETIFF", "clone").
int vpnkit_open_tap_joining(const char *userns_path, const char *netns_path, const char *name, int vnet_hdr, char name_out[16],
                            const char **step);

/// What `vpnkit_configure_interface` sets on a device: IPv4 values in host byte order, 0 for "leave it".
struct vpnkit_interface_setup {
    const char *device;
    unsigned int mtu;
    unsigned int address;
    unsigned int prefix_length;
    /// The default route's gateway (0: no route added).
    unsigned int gateway;
    /// Also bring `lo` up (a fresh namespace's loopback is down).
    int loopback_up;
    /// Set the device's MAC address to `mac` (non-zero `set_mac`) before bringing it up.
    int set_mac;
    unsigned char mac[6];
};

/// Configures an interface inside a network namespace, entered as `vpnkit_open_tap_joining` does,
/// with ioctls (no tool, no privilege on the host): lo up, the MTU, the MAC address, an IPv4 address
/// and netmask, the device up, a default route. Returns 0, or -1 with errno set and the failing step in `*step`.
int vpnkit_configure_interface(const char *userns_path, const char *netns_path, const struct vpnkit_interface_setup *setup,
                               const char **step);

/// TUNSETOFFLOAD: the offloads (TUN_F_CSUM 0x01, TUN_F_TSO4 0x02, ...) the reader of a TAP opened
/// with IFF_VNET_HDR accepts; the guest's interface then hands it unfinished checksums and TCP
/// segments up to 64 KiB. Returns 0, or -1 with errno set.
int vpnkit_tap_set_offload(int fd, unsigned int flags);

/// Receive packet steering: writes a mask of every CPU this thread may run on to the rps_cpus file of
/// each receive queue of `device`, inside the network namespace at `netns_path` (NULL: our own). The
/// kernel then does the guest's receive processing of the frames we write (IP, TCP, waking the reader)
/// on the CPU the flow hashes to, queued there, instead of inside our write(2). Done from a short-lived
/// thread with its own mount namespace and sysfs (needs CAP_SYS_ADMIN, and CAP_NET_ADMIN in the initial user namespace); nothing else in the process
/// changes namespace. Returns the number of CPUs in the mask, 0 when there is only one (nothing set),
/// or -1 with errno set and the failing step in `*step`.
int vpnkit_tap_spread_receive(const char *netns_path, const char *device, const char **step);

/// One frame to a TAP, gathered from up to three pieces (a virtio-net header, the headers, the
/// payload; empty pieces are skipped) in one writev(2): one write is one frame. Retries EINTR; returns
/// the bytes written, or -1 with errno set.
long vpnkit_tap_writev3(int fd, const void *a, unsigned long a_length, const void *b, unsigned long b_length,
                        const void *c, unsigned long c_length);

/// glibc's mallopt(3): M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, in bytes. Returns 1 when both were
/// accepted, 0 otherwise.
int vpnkit_tune_malloc(int mmap_threshold, int trim_threshold);

/// RLIMIT_NOFILE: raises the soft limit to `needed` when it is lower, as far as the hard limit allows.
/// Writes the soft limit from before to `before` and the limits in force afterwards to `soft` and
/// `hard` (RLIM_INFINITY as is). Returns 0, or -1 with errno set.
int vpnkit_raise_open_files(unsigned long needed, unsigned long *before, unsigned long *soft, unsigned long *hard);

/// A UDP socket for the NAT: non-blocking, close-on-exec, bound to 0.0.0.0 on an ephemeral port,
/// with IP_RECVERR so ICMP errors about datagrams sent to any destination are queued (the kernel
/// reports them on unconnected sockets only then). Buffer sizes of 0 leave the defaults. Returns the
/// fd, or -1 with errno set.
int vpnkit_udp_socket(unsigned int rcvbuf, unsigned int sndbuf);

/// `vpnkit_udp_socket` for IPv6: AF_INET6 (IPV6_V6ONLY), bound to :: on an ephemeral port, with
/// IPV6_RECVERR so ICMPv6 errors about datagrams it sends are queued. Returns the fd, or -1 with
/// errno set.
int vpnkit_udp_socket6(unsigned int rcvbuf, unsigned int sndbuf);

/// `vpnkit_udp_socket` (IPv4, `ipv6` zero) or `vpnkit_udp_socket6` bound to `address` (4 or 16
/// bytes in network order; NULL: every address) instead: the NAT's outbound address. Returns the fd,
/// or -1 with errno set (EADDRNOTAVAIL for an address the host does not have).
int vpnkit_udp_socket_from(int ipv6, const unsigned char *address, unsigned int rcvbuf, unsigned int sndbuf);

/// One entry of a socket's error queue.
struct vpnkit_udp_error {
    unsigned int address;   // the original IPv4 destination, host byte order (0 for IPv6)
    unsigned short port;    // the original destination port, host byte order
    unsigned char origin;   // SO_EE_ORIGIN_*: 2 = ICMP, 3 = ICMPv6
    unsigned char type;     // ICMP (or ICMPv6) type
    unsigned char code;     // ICMP (or ICMPv6) code
    int error;              // errno equivalent (ECONNREFUSED, EHOSTUNREACH, ...)
    unsigned char address6[16];  // the original IPv6 destination, network byte order (origin 3)
};

/// Takes the next entry of `fd`'s error queue: 1 when one was read into `out`, 0 when an entry
/// without IP_RECVERR (or IPV6_RECVERR) data was consumed, -1 (EAGAIN) when the queue is empty.
int vpnkit_udp_next_error(int fd, struct vpnkit_udp_error *out);

/// bind(2) of the unix socket `fd` to `path`, the socket file created with the permission bits
/// `mode` (0600: the owner only) whatever the process's umask, which is left alone: the bind runs in
/// a short-lived child that shares our memory but has a umask of its own (socketfile.c). A default
/// ACL on the directory still applies, as to any bind. Returns 0, or -1 with errno set (bind's own,
/// ENAMETOOLONG for a path that does not fit `sun_path`).
int vpnkit_bind_unix(int fd, const char *path, unsigned int mode);


// Confinement (confine.c). The sandbox is made in two steps because a mount namespace belongs to a
// thread: `vpnkit_sandbox_prepare`, at startup while the process has one thread, gives the process
// a mount namespace of its own (a slave of the host's: mounts made on the host later still arrive);
// after setup, `vpnkit_sandbox_enter` (any thread) mounts a tmpfs, binds the `keep` paths into it
// read-only (absent ones are skipped), pivots the root into it for every thread and detaches the
// old root. Both need CAP_SYS_ADMIN: as root we have it; unprivileged, `vpnkit_sandbox_prepare`
// first enters the user namespace at `userns_path` (NULL: the one owning the network namespace at
// `netns_path`), as slirp4netns does, which its owner may. Both return 0, or -1 with errno and the
// failing step set.
int vpnkit_sandbox_prepare(const char *userns_path, const char *netns_path, const char **step);
int vpnkit_sandbox_prepared(void);
int vpnkit_sandbox_enter(const char *const *keep, int keep_count, const char **step);

/// The calling thread only (capabilities are per thread): PR_SET_NO_NEW_PRIVS, the ambient set
/// cleared, the bounding set emptied (but CAP_NET_BIND_SERVICE when `keep_bind_service`), and the
/// permitted and effective sets reduced to that. Returns 0 or -1 with errno set.
int vpnkit_drop_capabilities(int keep_bind_service);

/// `vpnkit_drop_capabilities` on every other thread of the process: each is sent SIGSYS, whose
/// handler (installed meanwhile) drops its capabilities; /proc/self/task is read again until every
/// thread's status shows them dropped (up to 5 rounds). Call before the sandbox hides /proc. Writes
/// to `*undropped` the threads still holding capabilities (0 on success). Returns 0, or -1 with errno.
int vpnkit_drop_capabilities_other_threads(int keep_bind_service, int *undropped);

/// posix_spawn(path) and wait for it: 0 when the program ran, else the errno of the spawn (the
/// execve's, EPERM under the seccomp filter). The confinement self-test's probe.
int vpnkit_try_exec(const char *path);

/// Forks a child that makes a user namespace, a network namespace and a mount namespace of its own
/// (unshare(2)), maps our effective uid and gid to themselves in it (setgroups denied), makes its
/// mounts private, and then waits. Returns the child's pid once it waits, with `go_fd` holding the
/// two descriptors `vpnkit_spawn_go` needs; or -1 with errno set and the failing step in `*step`
/// (the child reaped). The caller meanwhile works in /proc/PID/ns/net (entering /proc/PID/ns/user).
/// After the go the child bind-mounts `resolv_conf` (unless NULL) over /etc/resolv.conf, restores the
/// default signal dispositions and an empty signal mask, and execvp(3)s `argv` (NULL-terminated).
int vpnkit_spawn_unshared(char *const argv[], const char *resolv_conf, int go_fd[2], const char **step);

/// Tells a child of `vpnkit_spawn_unshared` to go on, and waits until it has exec'd its command:
/// 0, or -1 with errno set and the failing step (the bind mount, execvp) in `*step`; the child then
/// exits with status 127 (the caller reaps it). Closes both descriptors.
int vpnkit_spawn_go(const int go_fd[2], const char **step);

/// Closes the descriptors of a child that will not be told to go: it exits with status 127.
void vpnkit_spawn_abandon(const int go_fd[2]);

#endif  // __linux__

#endif
