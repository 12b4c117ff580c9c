#define _GNU_SOURCE
#include "CVPNKitLinux.h"

#ifdef __linux__

#include <errno.h>
#include <time.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// One non-blocking UDP socket of `family`, bound to an ephemeral port on every address (or on
// `address`: 4 or 16 bytes in network order, when not NULL), with the error queue on (IP_RECVERR or
// IPV6_RECVERR) and IPv6 sockets IPv6-only.
static int udp_socket(int family, const unsigned char *address, unsigned int rcvbuf, unsigned int sndbuf) {
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    if (family == AF_INET6) {
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) goto fail;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof one) != 0) goto fail;
    } else if (setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one) != 0) {
        goto fail;
    }
    if (rcvbuf > 0) (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (sndbuf > 0) (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_storage any;
    memset(&any, 0, sizeof any);
    any.ss_family = (sa_family_t)family;
    if (address != NULL && family == AF_INET6) memcpy(&((struct sockaddr_in6 *)&any)->sin6_addr, address, 16);
    if (address != NULL && family == AF_INET) memcpy(&((struct sockaddr_in *)&any)->sin_addr, address, 4);
    socklen_t length = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&any, length) != 0) goto fail;
    return fd;
fail:;
    int err = errno;
    close(fd);
    errno = err;
    return -1;
}

int vpnkit_udp_socket(unsigned int rcvbuf, unsigned int sndbuf) { return udp_socket(AF_INET, NULL, rcvbuf, sndbuf); }

int vpnkit_udp_socket6(unsigned int rcvbuf, unsigned int sndbuf) { return udp_socket(AF_INET6, NULL, rcvbuf, sndbuf); }

int vpnkit_udp_socket_from(int ipv6, const unsigned char *address, unsigned int rcvbuf, unsigned int sndbuf) {
    return udp_socket(ipv6 ? AF_INET6 : AF_INET, address, rcvbuf, sndbuf);
}

int vpnkit_udp_next_error(int fd, struct vpnkit_udp_error *out) {
    char data[1];
    char control[512];
    struct sockaddr_storage destination;
    struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    memset(&destination, 0, sizeof destination);
    msg.msg_name = &destination;
    msg.msg_namelen = sizeof destination;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return -1;
    memset(out, 0, sizeof *out);
    if (destination.ss_family == AF_INET6) {
        struct sockaddr_in6 *six = (struct sockaddr_in6 *)&destination;
        memcpy(out->address6, &six->sin6_addr, 16);
        out->port = ntohs(six->sin6_port);
    } else {
        struct sockaddr_in *four = (struct sockaddr_in *)&destination;
        out->address = ntohl(four->sin_addr.s_addr);
        out->port = ntohs(four->sin_port);
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR)
            || (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)) {
            struct sock_extended_err *e = (struct sock_extended_err *)CMSG_DATA(c);
            out->origin = e->ee_origin;
            out->type = e->ee_type;
            out->code = e->ee_code;
            out->error = (int)e->ee_errno;
            return 1;
        }
    }
    return 0;
}

#endif  // __linux__
