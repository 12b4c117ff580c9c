// The daemon's seccomp filter (`--enable-seccomp`), through libseccomp. Linux only.
//
// A deny-list, not an allow-list: the daemon runs SwiftNIO, Foundation and Dispatch, whose system
// calls change with their versions and the C library's (glibc 2.34 moved thread creation to clone3,
// for one), and a call an allow-list misses kills or breaks the network of every container behind
// us. So the filter refuses, with EPERM, the calls a network daemon never needs once set up and that
// an attacker who took it over would want: running programs, debugging other processes, changing
// namespaces or mounts, loading kernel code, keys, rebooting, and the like: slirp4netns's list and
// more (its prctl excepted: glibc names threads with prctl(PR_SET_NAME), and SwiftNIO starts threads
// after setup). clone is refused when it asks for a new namespace; clone3, whose flags sit behind a
// pointer the filter cannot read, answers ENOSYS, and the C library then falls back to clone.
// The filter is loaded with TSYNC: it applies to every thread, those SwiftNIO and Dispatch already
// started included, and to every thread or child made later; it sets PR_SET_NO_NEW_PRIVS on them.

#if os(Linux)
import CSeccomp
import Glibc

enum SeccompFilter {
    /// The refused system calls, by name (names this architecture lacks are skipped).
    static let denied: [String] = [
        // running other programs
        "execve", "execveat",
        // other processes' memory and control
        "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "pidfd_open", "pidfd_send_signal", "kcmp",
        // namespaces and mounts
        "setns", "unshare", "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount", "fsconfig", "fspick",
        "move_mount", "open_tree", "mount_setattr",
        // kernel code, kernel state
        "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf", "perf_event_open",
        "reboot", "swapon", "swapoff", "acct", "quotactl", "lookup_dcookie", "syslog", "iopl", "ioperm", "uselib",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "vhangup",
        // keys
        "keyctl", "add_key", "request_key",
        // file handles (they bypass paths, and so the sandbox), extended attributes written
        "open_by_handle_at", "name_to_handle_at", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
        "fremovexattr",
        // kernel attack surface a network daemon does not use
        "userfaultfd", "personality", "io_uring_setup", "io_uring_enter", "io_uring_register",
    ]

    /// The namespace flags clone(2) may not ask for.
    static let namespaceFlags: [UInt64] = [
        0x0002_0000,  // CLONE_NEWNS
        0x0200_0000,  // CLONE_NEWCGROUP
        0x0400_0000,  // CLONE_NEWUTS
        0x0800_0000,  // CLONE_NEWIPC
        0x1000_0000,  // CLONE_NEWUSER
        0x2000_0000,  // CLONE_NEWPID
        0x4000_0000,  // CLONE_NEWNET
        0x0000_0080,  // CLONE_NEWTIME
    ]

    struct Failure: Error, CustomStringConvertible {
        var step: String
        var code: Int32
        var description: String { "seccomp: \(step): \(String(cString: strerror(code)))" }
    }

    /// SCMP_ACT_ERRNO(code), a C macro Swift cannot import.
    static func errno(_ code: Int32) -> UInt32 { 0x0005_0000 | (UInt32(code) & 0xFFFF) }

    /// Loads the filter on every thread of the process. Irreversible.
    static func install() throws(Failure) {
        guard let context = seccomp_init(0x7FFF_0000) else { throw Failure(step: "seccomp_init", code: ENOMEM) }  // SCMP_ACT_ALLOW
        defer { seccomp_release(context) }
        var rc = seccomp_attr_set(context, SCMP_FLTATR_CTL_TSYNC, 1)
        if rc != 0 { throw Failure(step: "TSYNC (filter every thread)", code: -rc) }
        rc = seccomp_attr_set(context, SCMP_FLTATR_CTL_NNP, 1)
        if rc != 0 { throw Failure(step: "PR_SET_NO_NEW_PRIVS", code: -rc) }
        for name in denied {
            let number = seccomp_syscall_resolve_name(name)
            if number == __NR_SCMP_ERROR { continue }
            rc = seccomp_rule_add_array(context, errno(EPERM), number, 0, nil)
            if rc != 0 { throw Failure(step: "refuse \(name)", code: -rc) }
        }
        let clone = seccomp_syscall_resolve_name("clone")
        for flag in namespaceFlags {
            // clone's flags are its first argument on every architecture but s390 (second): masked
            // equality per flag, rules for one call OR'ed.
            var comparison = scmp_arg_cmp(arg: 0, op: SCMP_CMP_MASKED_EQ, datum_a: flag, datum_b: flag)
            rc = seccomp_rule_add_array(context, errno(EPERM), clone, 1, &comparison)
            if rc != 0 { throw Failure(step: "refuse clone with namespace flags", code: -rc) }
        }
        let clone3 = seccomp_syscall_resolve_name("clone3")
        if clone3 != __NR_SCMP_ERROR {
            rc = seccomp_rule_add_array(context, errno(ENOSYS), clone3, 0, nil)
            if rc != 0 { throw Failure(step: "clone3 as ENOSYS", code: -rc) }
        }
        rc = seccomp_load(context)
        if rc != 0 { throw Failure(step: "seccomp_load", code: -rc) }
    }
}
#endif
