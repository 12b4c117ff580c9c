// Work inside another process's namespaces: open a TAP device there, configure an interface there.
//
// Entering a network namespace owned by another user namespace (a rootless container's, or the one
// `vpnkit run` makes as an ordinary user) takes setns(2) into that user namespace first, which the
// kernel allows only to a single-threaded process with filesystem attributes of its own. The daemon
// has many threads, so a child made with clone(2) (child.c) does it: it shares our memory and our
// descriptor table (CLONE_FILES: the TAP it opens is ours) but nothing else, enters the namespaces,
// does its few system calls, writes the result into the request and exits. Our own threads never
// change namespace.

#define _GNU_SOURCE
#include "CVPNKitLinux.h"

#ifdef __linux__

#include "child.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

struct join_request {
    const char *userns_path;
    const char *netns_path;
    // The TAP to open (open_tap_child) or the interface to configure (configure_child).
    const char *name;
    int vnet_hdr;
    const struct vpnkit_interface_setup *setup;
    // Results.
    int fd;
    char name_out[IFNAMSIZ];
    int error;
    const char *step;
};

static int fail(struct join_request *request, const char *step) {
    request->error = errno != 0 ? errno : EIO;
    request->step = step;
    return -1;
}

// Enters the user namespace (when it is not already ours) and then the network namespace.
static int join(struct join_request *request) {
    int user = -1, net = -1;
    if (request->userns_path != NULL) {
        user = open(request->userns_path, O_RDONLY | O_CLOEXEC);
        if (user < 0) return fail(request, "open user namespace");
    }
    if (request->netns_path != NULL) {
        net = open(request->netns_path, O_RDONLY | O_CLOEXEC);
        if (net < 0) {
            fail(request, "open network namespace");
            if (user >= 0) close(user);
            return -1;
        }
    }
    if (user >= 0) {
        struct stat target, own;
        int same = fstat(user, &target) == 0 && stat("/proc/self/ns/user", &own) == 0 && target.st_ino == own.st_ino &&
                   target.st_dev == own.st_dev;
        // setns into the namespace we are already in is EINVAL: only a different one is entered.
        if (!same && setns(user, CLONE_NEWUSER) != 0) {
            fail(request, "setns user namespace");
            close(user);
            if (net >= 0) close(net);
            return -1;
        }
        close(user);
    }
    if (net >= 0) {
        int rc = setns(net, CLONE_NEWNET);
        if (rc != 0) fail(request, "setns network namespace");
        close(net);
        if (rc != 0) return -1;
    }
    return 0;
}

static int open_tap_child(void *argument) {
    struct join_request *request = argument;
    if (join(request) != 0) return 0;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fail(request, "open /dev/net/tun");
        return 0;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (request->vnet_hdr ? IFF_VNET_HDR : 0);
    if (request->name != NULL) strncpy(ifr.ifr_name, request->name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        fail(request, "TUNSETIFF");
        close(fd);
        return 0;
    }
    memcpy(request->name_out, ifr.ifr_name, IFNAMSIZ);
    request->name_out[IFNAMSIZ - 1] = 0;
    request->fd = fd;
    return 0;
}

int vpnkit_open_tap_joining(const char *userns_path, const char *netns_path, const char *name, int vnet_hdr, char name_out[16],
                            const char **step) {
    struct join_request request;
    memset(&request, 0, sizeof request);
    request.userns_path = userns_path;
    request.netns_path = netns_path;
    request.name = name;
    request.vnet_hdr = vnet_hdr;
    request.fd = -1;
    if (vpnkit_in_child(open_tap_child, &request, CLONE_FILES) != 0) {
        *step = "clone";
        return -1;
    }
    if (request.fd < 0) {
        *step = request.step != NULL ? request.step : "open tap";
        errno = request.error != 0 ? request.error : EIO;
        return -1;
    }
    memcpy(name_out, request.name_out, IFNAMSIZ);
    return request.fd;
}

// An ifreq naming `device`, the rest zeroed.
static struct ifreq named(const char *device) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, device, IFNAMSIZ - 1);
    return ifr;
}

static int set_flags_up(int sock, const char *device) {
    struct ifreq ifr = named(device);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) != 0) return -1;
    ifr.ifr_flags |= IFF_UP;
    return ioctl(sock, SIOCSIFFLAGS, &ifr);
}

static void put_ipv4(struct sockaddr *into, unsigned int address) {
    struct sockaddr_in *in = (struct sockaddr_in *)into;
    memset(in, 0, sizeof *in);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(address);
}

// Applies `setup` through `sock`, in order; returns NULL, or the step that failed (errno set).
static const char *configure_device(int sock, const struct vpnkit_interface_setup *setup) {
    struct ifreq ifr;
    if (setup->loopback_up && set_flags_up(sock, "lo") != 0) return "bring lo up";
    if (setup->mtu != 0) {
        ifr = named(setup->device);
        ifr.ifr_mtu = (int)setup->mtu;
        if (ioctl(sock, SIOCSIFMTU, &ifr) != 0) return "set MTU";
    }
    if (setup->set_mac) {
        ifr = named(setup->device);
        ifr.ifr_hwaddr.sa_family = 1;  // ARPHRD_ETHER
        memcpy(ifr.ifr_hwaddr.sa_data, setup->mac, 6);
        if (ioctl(sock, SIOCSIFHWADDR, &ifr) != 0) return "set MAC address";
    }
    if (setup->address != 0) {
        ifr = named(setup->device);
        put_ipv4(&ifr.ifr_addr, setup->address);
        if (ioctl(sock, SIOCSIFADDR, &ifr) != 0) return "set address";
        unsigned int mask = setup->prefix_length == 0 ? 0 : 0xFFFFFFFFu << (32 - setup->prefix_length);
        ifr = named(setup->device);
        put_ipv4(&ifr.ifr_netmask, mask);
        if (ioctl(sock, SIOCSIFNETMASK, &ifr) != 0) return "set address";
    }
    if (set_flags_up(sock, setup->device) != 0) return "bring the device up";
    if (setup->gateway != 0) {
        struct rtentry route;
        memset(&route, 0, sizeof route);
        put_ipv4(&route.rt_dst, 0);
        put_ipv4(&route.rt_genmask, 0);
        put_ipv4(&route.rt_gateway, setup->gateway);
        route.rt_flags = RTF_UP | RTF_GATEWAY;
        route.rt_dev = (char *)setup->device;
        if (ioctl(sock, SIOCADDRT, &route) != 0 && errno != EEXIST) return "add default route";
    }
    return NULL;
}

static int configure_child(void *argument) {
    struct join_request *request = argument;
    if (join(request) != 0) return 0;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        fail(request, "socket");
        return 0;
    }
    const char *failed = configure_device(sock, request->setup);
    if (failed != NULL) fail(request, failed);
    close(sock);
    return 0;
}

int vpnkit_configure_interface(const char *userns_path, const char *netns_path, const struct vpnkit_interface_setup *setup,
                               const char **step) {
    struct join_request request;
    memset(&request, 0, sizeof request);
    request.userns_path = userns_path;
    request.netns_path = netns_path;
    request.setup = setup;
    if (vpnkit_in_child(configure_child, &request, 0) != 0) {
        *step = "clone";
        return -1;
    }
    if (request.step != NULL) {
        *step = request.step;
        errno = request.error;
        return -1;
    }
    return 0;
}

#endif  // __linux__
