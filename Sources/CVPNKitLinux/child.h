// Internal to CVPNKitLinux: work done in a short-lived child that shares our memory.
#ifndef SWIFTVPNKIT_CVPNKITLINUX_CHILD_H
#define SWIFTVPNKIT_CVPNKITLINUX_CHILD_H
#ifdef __linux__

/// Runs `body(argument)` in a child made with clone(2): CLONE_VM (it writes its results into
/// `argument`), CLONE_VFORK (we wait until it has exited) and `extra_flags` (CLONE_FILES: descriptors
/// it opens are ours). It does not share our filesystem attributes (umask, root, cwd) nor our
/// namespaces: what it changes there dies with it. No exit signal, reaped with __WALL; all signals
/// are blocked across the clone so no handler of ours runs on its stack. Returns 0 once it has
/// exited, or -1 with errno set when it could not be started.
int vpnkit_in_child(int (*body)(void *), void *argument, int extra_flags);

#endif
#endif
