#define _GNU_SOURCE
#include "CVPNKitLinux.h"

#ifdef __linux__

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

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

// Receive packet steering for a TAP device in another network namespace. The rps_cpus files of a
// device appear only in a sysfs mounted from inside its namespace, so a throwaway thread enters the
// namespace, takes a private mount namespace of its own (unshare(CLONE_NEWNS) in a thread unshares
// only that thread's view, as `ip netns exec` does for a process), mounts sysfs there and writes the
// mask. The thread ends right after, and its mount namespace with it; the process's own view of /sys
// and its other threads' namespaces are never touched.

struct vpnkit_rps_job {
    const char *netns_path;
    const char *device;
    char mask[300];
    int result;
    int error;
    const char *step;
};

static int vpnkit_rps_write_queues(struct vpnkit_rps_job *job) {
    char path[256];
    int written = 0;
    for (int queue = 0; queue < 256; queue++) {
        int n = snprintf(path, sizeof(path), "/sys/class/net/%s/queues/rx-%d/rps_cpus", job->device, queue);
        if (n < 0 || (size_t)n >= sizeof(path)) { job->step = "device name"; job->error = ENAMETOOLONG; return -1; }
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT && queue > 0) break;  // past the last receive queue
            job->step = "open rps_cpus"; job->error = errno; return -1;
        }
        size_t length = strlen(job->mask);
        ssize_t w;
        do { w = write(fd, job->mask, length); } while (w < 0 && errno == EINTR);
        int err = errno;
        close(fd);
        if (w != (ssize_t)length) { job->step = "write rps_cpus"; job->error = w < 0 ? err : EIO; return -1; }
        written++;
    }
    return written;
}

static void *vpnkit_rps_thread(void *argument) {
    struct vpnkit_rps_job *job = argument;
    job->result = -1;
    if (job->netns_path != NULL) {
        int target = open(job->netns_path, O_RDONLY | O_CLOEXEC);
        if (target < 0) { job->step = "open netns"; job->error = errno; return NULL; }
        int rc = setns(target, CLONE_NEWNET);
        int err = errno;
        close(target);
        if (rc != 0) { job->step = "setns"; job->error = err; return NULL; }
    }
    if (unshare(CLONE_NEWNS) != 0) { job->step = "unshare mount namespace"; job->error = errno; return NULL; }
    // Keep the new mount from propagating back into the process's mount namespace.
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) { job->step = "make mounts private"; job->error = errno; return NULL; }
    if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) { job->step = "mount sysfs"; job->error = errno; return NULL; }
    job->result = vpnkit_rps_write_queues(job);
    umount2("/sys", MNT_DETACH);
    return NULL;
}

int vpnkit_tap_spread_receive(const char *netns_path, const char *device, const char **step) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) { *step = "sched_getaffinity"; return -1; }
    int cpus = CPU_COUNT(&allowed);
    if (cpus < 2) return 0;
    struct vpnkit_rps_job job;
    memset(&job, 0, sizeof(job));
    job.netns_path = netns_path;
    job.device = device;
    // The kernel's bitmap format: hex words of 32 CPUs, most significant first, separated by commas.
    int highest = CPU_SETSIZE - 1;
    while (highest > 0 && !CPU_ISSET(highest, &allowed)) highest--;
    size_t at = 0;
    for (int word = highest / 32; word >= 0; word--) {
        unsigned int bits = 0;
        for (int bit = 0; bit < 32; bit++) if (CPU_ISSET(word * 32 + bit, &allowed)) bits |= 1u << bit;
        int n = snprintf(job.mask + at, sizeof(job.mask) - at, word > 0 ? "%08x," : "%08x", bits);
        if (n < 0 || (size_t)n >= sizeof(job.mask) - at) { *step = "cpu mask"; errno = EOVERFLOW; return -1; }
        at += (size_t)n;
    }
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, vpnkit_rps_thread, &job);
    if (rc != 0) { *step = "pthread_create"; errno = rc; return -1; }
    pthread_join(thread, NULL);
    if (job.result < 0) { *step = job.step; errno = job.error; return -1; }
    return cpus;
}

int vpnkit_raise_open_files(unsigned long needed, unsigned long *before, unsigned long *soft, unsigned long *hard) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
    *before = (unsigned long)limit.rlim_cur;
    *soft = (unsigned long)limit.rlim_cur;
    *hard = (unsigned long)limit.rlim_max;
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
        rlim_t wanted = needed;
        if (limit.rlim_max != RLIM_INFINITY && wanted > limit.rlim_max) wanted = limit.rlim_max;
        if (wanted > limit.rlim_cur) {
            limit.rlim_cur = wanted;
            if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
            *soft = (unsigned long)wanted;
        }
    }
    return 0;
}

#endif  // __linux__
