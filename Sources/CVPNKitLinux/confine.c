// The sandbox's system calls (see "Confinement" in CVPNKitLinux.h): unshare, mount, pivot_root,
// capabilities, and a self-test's spawn. Safe because every buffer is local and bounded (paths are
// checked against PATH_MAX before they are copied) and nothing here keeps a pointer it was given.

#define _GNU_SOURCE
#include "CVPNKitLinux.h"

#ifdef __linux__

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <spawn.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int prepared = 0;

static int thread_count(void) {
    DIR *tasks = opendir("/proc/self/task");
    if (tasks == NULL) return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(tasks)) != NULL) {
        if (entry->d_name[0] != '.') count++;
    }
    closedir(tasks);
    return count;
}

// Enters the user namespace at `userns_path`, or, NULL, the one that owns the network namespace at
// `netns_path`; none when it is already ours.
static int join_user_namespace(const char *userns_path, const char *netns_path, const char **step) {
    int user;
    if (userns_path != NULL) {
        user = open(userns_path, O_RDONLY | O_CLOEXEC);
        if (user < 0) { *step = "open the user namespace"; return -1; }
    } else {
        int net = open(netns_path, O_RDONLY | O_CLOEXEC);
        if (net < 0) { *step = "open the network namespace"; return -1; }
        user = ioctl(net, NS_GET_USERNS);
        int saved = errno;
        close(net);
        errno = saved;
        if (user < 0) { *step = "find the user namespace owning the network namespace (NS_GET_USERNS)"; return -1; }
    }
    struct stat target, own;
    int same = fstat(user, &target) == 0 && stat("/proc/self/ns/user", &own) == 0 && target.st_ino == own.st_ino &&
               target.st_dev == own.st_dev;
    int rc = same ? 0 : setns(user, CLONE_NEWUSER);
    int saved = errno;
    close(user);
    errno = saved;
    if (rc < 0) *step = "setns(CLONE_NEWUSER)";
    return rc;
}

int vpnkit_sandbox_prepare(const char *userns_path, const char *netns_path, const char **step) {
    // A mount namespace is per thread (unshare gives only the caller its own), and only a process
    // with one thread may enter a user namespace: made while we are the only thread, every thread
    // made later starts in both.
    int threads = thread_count();
    if (threads != 1) {
        *step = "check that the process is single-threaded";
        errno = threads < 0 ? errno : EBUSY;
        return -1;
    }
    // Unprivileged, as slirp4netns: the user namespace that owns the guest's network namespace
    // (which the same user owns, so setns gives us every capability in it) owns our mount namespace.
    if (geteuid() != 0 && join_user_namespace(userns_path, netns_path, step) < 0) return -1;
    if (unshare(CLONE_NEWNS) < 0) {
        *step = "unshare(CLONE_NEWNS)";
        return -1;
    }
    // Slave: the host's later mounts (a new /run/netns entry) still reach us, ours never leave.
    if (mount("", "/", NULL, MS_SLAVE | MS_REC, NULL) < 0) {
        *step = "make / a slave mount";
        return -1;
    }
    prepared = 1;
    return 0;
}

int vpnkit_sandbox_prepared(void) { return prepared; }

// mkdir -p of the parent directories of `path` (inside the new root).
static int make_parents(char *path) {
    for (char *slash = strchr(path + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        int rc = mkdir(path, 0755);
        *slash = '/';
        if (rc < 0 && errno != EEXIST) return -1;
    }
    return 0;
}

int vpnkit_sandbox_enter(const char *const *keep, int keep_count, const char **step) {
    if (!prepared) {
        *step = "the mount namespace made at startup";
        errno = EINVAL;
        return -1;
    }
    const char *staging = "/tmp";
    if (mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755") < 0) {
        *step = "mount a tmpfs on /tmp";
        return -1;
    }
    for (int i = 0; i < keep_count; i++) {
        char target[PATH_MAX];
        struct stat info;
        if (keep[i][0] != '/' || stat(keep[i], &info) < 0) continue; // absent: nothing to keep
        if (snprintf(target, sizeof target, "%s%s", staging, keep[i]) >= (int)sizeof target) {
            *step = "a kept path is too long";
            errno = ENAMETOOLONG;
            return -1;
        }
        if (make_parents(target) < 0) {
            *step = "make a kept path's directories";
            return -1;
        }
        if (S_ISDIR(info.st_mode)) {
            if (mkdir(target, 0755) < 0 && errno != EEXIST) { *step = "make a kept directory"; return -1; }
        } else {
            int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
            if (fd < 0) { *step = "make a kept file"; return -1; }
            close(fd);
        }
        // A bind mount follows symbolic links: /etc/resolv.conf -> /run/... keeps the file it names.
        unsigned long flags = MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC;
        if (mount(keep[i], target, NULL, flags, NULL) < 0) { *step = "bind a kept path"; return -1; }
        if (mount(NULL, target, NULL, flags | MS_REMOUNT | MS_RDONLY, NULL) < 0) { *step = "make a kept path read-only"; return -1; }
    }
    char old[PATH_MAX];
    snprintf(old, sizeof old, "%s/.old", staging);
    if (mkdir(old, 0700) < 0) { *step = "mkdir the old root's mount point"; return -1; }
    if (chdir(staging) < 0) { *step = "chdir /tmp"; return -1; }
    // pivot_root moves the root and working directory of every thread (they share one fs_struct).
    if (syscall(SYS_pivot_root, ".", ".old") < 0) { *step = "pivot_root"; return -1; }
    if (chdir("/") < 0) { *step = "chdir /"; return -1; }
    if (umount2("/.old", MNT_DETACH) < 0) { *step = "detach the old root"; return -1; }
    if (rmdir("/.old") < 0) { *step = "rmdir the old root's mount point"; return -1; }
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        *step = "remount the new root read-only";
        return -1;
    }
    return 0;
}

// The calling thread's drop. Only system calls: it also runs in a signal handler.
static int drop_this_thread(int keep_bind_service) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return -1;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) return -1;
    for (int cap = 0; cap <= 63; cap++) {
        if (keep_bind_service && cap == CAP_NET_BIND_SERVICE) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL) break; // past the last capability this kernel knows
            if (errno == EPERM) break;  // no CAP_SETPCAP: nothing in the bounding set to protect
            return -1;
        }
    }
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (keep_bind_service) {
        data[0].effective = data[0].permitted = 1u << CAP_NET_BIND_SERVICE;
    }
    if (syscall(SYS_capset, &header, data) < 0) {
        // Without CAP_NET_BIND_SERVICE in the permitted set, keeping it is impossible: drop all.
        memset(data, 0, sizeof data);
        if (syscall(SYS_capset, &header, data) < 0) return -1;
    }
    return 0;
}

int vpnkit_drop_capabilities(int keep_bind_service) { return drop_this_thread(keep_bind_service); }

// The other threads' drop, asked by signal (capabilities belong to a thread, and no system call
// changes another thread's). SIGSYS: Dispatch and SwiftNIO block most signals in their threads but
// leave the synchronous ones, SIGSYS among them, open; nothing in the daemon uses it otherwise (the
// seccomp filter answers errnos, never SIGSYS), and the handler is in place only meanwhile.
static int broadcast_keep;
static _Atomic int broadcast_done;
static _Atomic int broadcast_failed;

static void drop_on_signal(int signal) {
    (void)signal;
    int saved = errno;
    if (drop_this_thread(broadcast_keep) != 0) broadcast_failed++;
    broadcast_done++;
    errno = saved;
}

// Whether thread `tid`'s status shows its capabilities dropped: no permitted capability but
// CAP_NET_BIND_SERVICE, and NoNewPrivs set.
static int thread_dropped(long tid, unsigned long long allowed) {
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/task/%ld/status", tid);
    FILE *status = fopen(path, "re");
    if (status == NULL) return 1; // gone: nothing left to drop
    int effective_ok = 0, nnp_ok = 0;
    while (fgets(line, sizeof line, status) != NULL) {
        unsigned long long value;
        if (sscanf(line, "CapPrm: %llx", &value) == 1) effective_ok = (value & ~allowed) == 0;
        if (sscanf(line, "NoNewPrivs: %llu", &value) == 1) nnp_ok = value == 1;
    }
    fclose(status);
    return effective_ok && nnp_ok;
}

int vpnkit_drop_capabilities_other_threads(int keep_bind_service, int *undropped) {
    struct sigaction action, saved;
    memset(&action, 0, sizeof action);
    action.sa_handler = drop_on_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    broadcast_keep = keep_bind_service;
    broadcast_failed = 0;
    if (sigaction(SIGSYS, &action, &saved) < 0) return -1;
    unsigned long long allowed = keep_bind_service ? (1ull << CAP_NET_BIND_SERVICE) : 0;
    long self = syscall(SYS_gettid);
    pid_t pid = getpid();
    int remaining = 0;
    // Rounds: a thread made meanwhile by one not yet dropped is caught by the next.
    for (int round = 0; round < 5; round++) {
        DIR *tasks = opendir("/proc/self/task");
        if (tasks == NULL) break;
        remaining = 0;
        struct dirent *entry;
        while ((entry = readdir(tasks)) != NULL) {
            if (entry->d_name[0] == '.') continue;
            long tid = strtol(entry->d_name, NULL, 10);
            if (tid == self || thread_dropped(tid, allowed)) continue;
            remaining++;
            broadcast_done = 0;
            if (syscall(SYS_tgkill, pid, tid, SIGSYS) < 0) continue; // exited
            // Wait for its handler (up to 1 s; a thread that blocks SIGSYS never runs it).
            for (int i = 0; i < 1000 && broadcast_done == 0; i++) {
                struct timespec pause = {0, 1000000};
                nanosleep(&pause, NULL);
            }
        }
        closedir(tasks);
        if (remaining == 0) break;
    }
    sigaction(SIGSYS, &saved, NULL);
    *undropped = remaining;
    if (broadcast_failed != 0) {
        errno = EPERM;
        return -1;
    }
    return 0;
}

int vpnkit_try_exec(const char *path) {
    pid_t child;
    char *const argv[] = {(char *)path, NULL};
    int rc = posix_spawn(&child, path, NULL, NULL, argv, environ);
    if (rc != 0) return rc;
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    return 0;
}

#endif
