// A unix socket bound with its file's mode set at creation, without touching the process's umask.
//
// bind(2) creates the socket file with mode 0777 & ~umask. The umask belongs to the process (all
// its threads share one), and SwiftNIO and the rest of the daemon create files and sockets on other
// threads, so setting it around our bind would change theirs too. Instead a child made with
// clone(2) does the bind: it shares our memory (CLONE_VM: it writes its result into our struct) but
// not our filesystem attributes (no CLONE_FS), so the umask it sets is its own. CLONE_VFORK
// suspends us until it has exited, as posix_spawn(3) does; with no exit signal it sends no SIGCHLD
// (nobody else's waitpid can take it) and is reaped here with __WALL. All signals are blocked
// across the clone so that no handler of ours runs on the child's stack.

#define _GNU_SOURCE
#include "CVPNKitLinux.h"

#ifdef __linux__

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

struct bind_request {
    int fd;
    mode_t mask;
    struct sockaddr_un address;
    int error;
};

static int bind_child(void *argument) {
    struct bind_request *request = argument;
    umask(request->mask);
    request->error = bind(request->fd, (struct sockaddr *)&request->address, sizeof request->address) == 0 ? 0 : errno;
    return 0;
}

int vpnkit_bind_unix(int fd, const char *path, unsigned int mode) {
    struct bind_request request;
    memset(&request, 0, sizeof request);
    request.fd = fd;
    request.mask = (mode_t)(~mode & 0777);
    request.address.sun_family = AF_UNIX;
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof request.address.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(request.address.sun_path, path, length);

    // The child's stack: it only calls umask and bind, which need little.
    const size_t stack_size = 64 * 1024;
    char *stack = malloc(stack_size);
    if (stack == NULL) {
        errno = ENOMEM;
        return -1;
    }
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t child = clone(bind_child, stack + stack_size, CLONE_VM | CLONE_VFORK, &request);
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
    if (request.error != 0) {
        errno = request.error;
        return -1;
    }
    return 0;
}

#endif  // __linux__
