// A command in a user namespace and a network namespace of its own, for `vpnkit run -- CMD` as an
// ordinary user (like `unshare -rn`, but the command keeps the caller's ids).
//
// The daemon is multithreaded, so after fork(2) the child makes only async-signal-safe calls
// (system calls on buffers prepared before the fork) until execve. Everything it needs — the map
// lines, the argument vector, the resolv.conf path — is built by the parent first.

#define _GNU_SOURCE
#include "CVPNKitLinux.h"

#ifdef __linux__

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

// What the child reports on the ready pipe when a step fails: the step's index and errno.
struct spawn_report {
    int step;
    int error;
};

static const char *const spawn_steps[] = {
    "ready",                       // 0: not a failure
    "unshare user and network namespaces",
    "write /proc/self/setgroups",
    "write /proc/self/uid_map",
    "write /proc/self/gid_map",
    "make mounts private",
    "wait for the network",
    "bind-mount resolv.conf",
    "execvp",
};

static int write_all(int fd, const void *buffer, size_t length) {
    const char *bytes = buffer;
    while (length > 0) {
        ssize_t n = write(fd, bytes, length);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        bytes += n;
        length -= (size_t)n;
    }
    return 0;
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int result = write_all(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    errno = saved;
    return result;
}

// In the child: report step `step` (0: ready) on `fd`.
static void report(int fd, int step, int error) {
    struct spawn_report message = {step, error};
    (void)write_all(fd, &message, sizeof message);
}

static void child_fail(int fd, int step) {
    report(fd, step, errno);
    _exit(127);
}

int vpnkit_spawn_unshared(char *const argv[], const char *resolv_conf, int go_fd[2], const char **step) {
    char uid_map[64], gid_map[64];
    snprintf(uid_map, sizeof uid_map, "%u %u 1\n", (unsigned)geteuid(), (unsigned)geteuid());
    snprintf(gid_map, sizeof gid_map, "%u %u 1\n", (unsigned)getegid(), (unsigned)getegid());
    int ready[2], go[2];
    if (pipe2(ready, O_CLOEXEC) < 0) {
        *step = "pipe";
        return -1;
    }
    if (pipe2(go, O_CLOEXEC) < 0) {
        int saved = errno;
        close(ready[0]);
        close(ready[1]);
        errno = saved;
        *step = "pipe";
        return -1;
    }
    // No signal handler of ours may run in the child between fork and execve.
    sigset_t all, saved_mask;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved_mask);
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        close(go[1]);
        // The daemon ignores SIGINT, SIGTERM and SIGHUP (it watches them another way); ignored
        // signals stay ignored across execve, so the command gets the defaults back.
        for (int number = 1; number < NSIG; number++) {
            if (number == SIGKILL || number == SIGSTOP) continue;
            struct sigaction action;
            memset(&action, 0, sizeof action);
            action.sa_handler = SIG_DFL;
            (void)sigaction(number, &action, NULL);
        }
        sigset_t none;
        sigemptyset(&none);
        if (unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS) < 0) child_fail(ready[1], 1);
        // Our own ids mapped to themselves: allowed to the namespace's creator without privilege once
        // setgroups(2) is denied.
        if (write_file("/proc/self/setgroups", "deny") < 0) child_fail(ready[1], 2);
        if (write_file("/proc/self/uid_map", uid_map) < 0) child_fail(ready[1], 3);
        if (write_file("/proc/self/gid_map", gid_map) < 0) child_fail(ready[1], 4);
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) child_fail(ready[1], 5);
        report(ready[1], 0, 0);
        // The daemon opens and configures tap0 in our namespaces meanwhile; one byte says go, end of
        // file says give up.
        char byte;
        ssize_t n;
        do { n = read(go[0], &byte, 1); } while (n < 0 && errno == EINTR);
        if (n != 1) {
            if (n == 0) errno = ECANCELED;
            child_fail(ready[1], 6);
        }
        if (resolv_conf != NULL && mount(resolv_conf, "/etc/resolv.conf", NULL, MS_BIND, NULL) < 0) child_fail(ready[1], 7);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        execvp(argv[0], argv);
        child_fail(ready[1], 8);
    }
    int fork_error = errno;
    pthread_sigmask(SIG_SETMASK, &saved_mask, NULL);
    close(ready[1]);
    close(go[0]);
    if (pid < 0) {
        close(ready[0]);
        close(go[1]);
        errno = fork_error;
        *step = "fork";
        return -1;
    }
    struct spawn_report message;
    ssize_t n;
    do { n = read(ready[0], &message, sizeof message); } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof message || message.step != 0) {
        int error = n == (ssize_t)sizeof message ? message.error : ECHILD;
        *step = n == (ssize_t)sizeof message && message.step > 0 && message.step < 9 ? spawn_steps[message.step] : "child";
        close(ready[0]);
        close(go[1]);
        int status;
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        errno = error;
        return -1;
    }
    // The ready pipe stays open in the child until execve: its end of file after the go then means
    // the command started, a report that a later step failed.
    go_fd[0] = go[1];
    go_fd[1] = ready[0];
    *step = NULL;
    return pid;
}

int vpnkit_spawn_go(const int go_fd[2], const char **step) {
    char byte = 1;
    int result = write_all(go_fd[0], &byte, 1);
    int error = errno;
    close(go_fd[0]);
    if (result < 0) {
        close(go_fd[1]);
        *step = "signal the child";
        errno = error;
        return -1;
    }
    struct spawn_report message;
    ssize_t n;
    do { n = read(go_fd[1], &message, sizeof message); } while (n < 0 && errno == EINTR);
    close(go_fd[1]);
    if (n == 0) return 0;  // execve closed the pipe: the command runs.
    if (n == (ssize_t)sizeof message && message.step > 0 && message.step < 9) {
        *step = spawn_steps[message.step];
        errno = message.error;
    } else {
        *step = "child";
        errno = EIO;
    }
    return -1;
}

void vpnkit_spawn_abandon(const int go_fd[2]) {
    close(go_fd[0]);
    close(go_fd[1]);
}

#endif  // __linux__
