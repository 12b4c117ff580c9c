#define _GNU_SOURCE
#include "CVPNKitLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

int vpnkit_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

int vpnkit_open_tap(const char *netns_path, const char *name, int vnet_hdr, char name_out[16], const char **step) {
    int saved = -1, target = -1, fd = -1, err = 0;
    if (netns_path != NULL) {
        saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (saved < 0) { *step = "open /proc/thread-self/ns/net"; return -1; }
        target = open(netns_path, O_RDONLY | O_CLOEXEC);
        if (target < 0) { err = errno; *step = "open netns"; close(saved); errno = err; return -1; }
        if (setns(target, CLONE_NEWNET) != 0) {
            err = errno; *step = "setns"; close(target); close(saved); errno = err; return -1;
        }
        close(target);
    }
    fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        err = errno; *step = "open /dev/net/tun";
    } else {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof(ifr));
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
        if (name != NULL) strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
        if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
            err = errno; *step = "TUNSETIFF"; close(fd); fd = -1;
        } else {
            memcpy(name_out, ifr.ifr_name, IFNAMSIZ);
            name_out[IFNAMSIZ - 1] = 0;
        }
    }
    if (saved >= 0) {
        if (setns(saved, CLONE_NEWNET) != 0) {
            // The thread is stuck in the wrong namespace: report it rather than carry on silently.
            int back = errno;
            close(saved);
            if (fd >= 0) close(fd);
            *step = "setns back";
            errno = back;
            return -1;
        }
        close(saved);
    }
    if (fd < 0) { errno = err; return -1; }
    return fd;
}

int vpnkit_tap_set_offload(int fd, unsigned int flags) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags);
}

long vpnkit_tap_writev3(int fd, const void *a, unsigned long a_length, const void *b, unsigned long b_length,
                        const void *c, unsigned long c_length) {
    struct iovec iov[3];
    int count = 0;
    const void *parts[3] = {a, b, c};
    unsigned long lengths[3] = {a_length, b_length, c_length};
    for (int i = 0; i < 3; i++) {
        if (lengths[i] == 0) continue;
        iov[count].iov_base = (void *)parts[i];
        iov[count].iov_len = lengths[i];
        count++;
    }
    ssize_t n;
    do { n = writev(fd, iov, count); } while (n < 0 && errno == EINTR);
    return n;
}
