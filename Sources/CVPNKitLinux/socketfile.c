// A unix socket bound with its file's mode set at creation, without touching the process's umask.
//
// bind(2) creates the socket file with mode 0777 & ~umask. The umask belongs to the process (all
// its threads share one), and SwiftNIO and the rest of the daemon create files and sockets on other
// threads, so setting it around our bind would change theirs too. Instead a child made with
// clone(2) does the bind (child.c): it shares our memory (it writes its result into our struct) but
// not our filesystem attributes, so the umask it sets is its own.

#define _GNU_SOURCE
#include "CVPNKitLinux.h"

#ifdef __linux__

#include "child.h"

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

    if (vpnkit_in_child(bind_child, &request, 0) != 0) return -1;
    if (request.error != 0) {
        errno = request.error;
        return -1;
    }
    return 0;
}

#endif  // __linux__
