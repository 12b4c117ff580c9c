// A short-lived child sharing our memory; see child.h. Safe because the parent is suspended
// (CLONE_VFORK) while the child runs on a stack of its own, and the child's bodies call only
// system calls and write into the request they were given.

#define _GNU_SOURCE
#include "CVPNKitLinux.h"

#ifdef __linux__

#include "child.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

int vpnkit_in_child(int (*body)(void *), void *argument, int extra_flags) {
    // The child's stack: its bodies make a handful of system calls.
    const size_t stack_size = 64 * 1024;
    char *stack = malloc(stack_size);
    if (stack == NULL) {
        errno = ENOMEM;
        return -1;
    }
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t child = clone(body, stack + stack_size, CLONE_VM | CLONE_VFORK | extra_flags, argument);
    int clone_error = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (child < 0) {
        free(stack);
        errno = clone_error;
        return -1;
    }
    int status;
    while (waitpid(child, &status, __WALL) < 0 && errno == EINTR) {}
    free(stack);
    return 0;
}

#endif  // __linux__
