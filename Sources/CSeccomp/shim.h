#ifndef SWIFTVPNKIT_CSECCOMP_SHIM_H
#define SWIFTVPNKIT_CSECCOMP_SHIM_H
// libseccomp (apt: libseccomp-dev). Linux only: no target depends on this module elsewhere.
#ifdef __linux__
#include <seccomp.h>
#endif
#endif
