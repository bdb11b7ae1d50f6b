// ThreadSanitizer builds only (-DOSH_SANITIZE=thread): makes Debian's prebuilt Abseil synchronization
// visible to TSan. libabsl_synchronization is not compiled with -fsanitize=thread, so TSan sees neither
// the acquire nor the release of an absl::Mutex and reports every access it guards as a race. This file
// interposes the exported Mutex, CondVar and Notification entry points (the executable's definitions
// win over the shared library's, also for the library's own calls through its PLT), calls the real
// ones through dlsym(RTLD_NEXT), and tells TSan what happened with its mutex annotation interface
// (sanitizer/tsan_interface.h) — what Abseil itself does when it is built with TSan.
//
// Limits: the symbol names are Debian's Abseil 20220623 ABI (inline namespace debian3); a different
// Abseil fails at start-up with a message rather than silently checking nothing. The inline fast path
// of Notification::HasBeenNotified is not seen (its callers here wait with WaitForNotification*).
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

// Set while a wrapper runs: the real functions call each other through the PLT (LockWhenWithTimeout
// calls LockWhenWithDeadline, Notification uses a Mutex), and only the outermost call is annotated.
thread_local int depth = 0;
// Mutexes this thread holds in reader mode (Await and CondVar::Wait release and re-take them as held).
thread_local std::vector<const void*> reader_held;

template <typename F>
F Real(const char* name) {
  void* f = dlsym(RTLD_NEXT, name);
  if (f == nullptr) {
    std::fprintf(stderr, "tsan_absl_annotations: %s not found in Abseil (not Debian's 20220623 ABI?)\n", name);
    std::abort();
  }
  return reinterpret_cast<F>(f);
}

bool HeldAsReader(const void* mu) {
  for (const void* m : reader_held) {
    if (m == mu) return true;
  }
  return false;
}
void ForgetReader(const void* mu) {
  for (auto it = reader_held.begin(); it != reader_held.end(); ++it) {
    if (*it == mu) {
      reader_held.erase(it);
      return;
    }
  }
}

struct Outermost {
  const bool outermost = depth++ == 0;
  ~Outermost() { --depth; }
};

// Lock-like: `call` takes the mutex (in `read` mode); `try_lock`: it may fail and says so.
template <typename Call>
auto Lock(void* mu, bool read, Call call) {
  Outermost guard;
  if (!guard.outermost) return call();
  const unsigned mode = read ? __tsan_mutex_read_lock : 0;
  __tsan_mutex_pre_lock(mu, mode);
  auto result = call();
  __tsan_mutex_post_lock(mu, mode, 0);
  if (read) reader_held.push_back(mu);
  return result;
}
template <typename Call>
bool TryLock(void* mu, bool read, Call call) {
  Outermost guard;
  if (!guard.outermost) return call();
  const unsigned mode = (read ? __tsan_mutex_read_lock : 0) | __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(mu, mode);
  const bool ok = call();
  __tsan_mutex_post_lock(mu, ok ? mode : mode | __tsan_mutex_try_lock_failed, 0);
  if (ok && read) reader_held.push_back(mu);
  return ok;
}
template <typename Call>
void Unlock(void* mu, bool read, Call call) {
  Outermost guard;
  if (!guard.outermost) return call();
  const unsigned mode = read ? __tsan_mutex_read_lock : 0;
  if (read) ForgetReader(mu);
  __tsan_mutex_pre_unlock(mu, mode);
  call();
  __tsan_mutex_post_unlock(mu, mode);
}
// Await and CondVar::Wait: the mutex is released while waiting and held again on return.
template <typename Call>
auto ReleaseWhile(void* mu, Call call) {
  Outermost guard;
  if (!guard.outermost) return call();
  const bool read = HeldAsReader(mu);
  const unsigned mode = read ? __tsan_mutex_read_lock : 0;
  __tsan_mutex_pre_unlock(mu, mode);
  auto result = call();
  __tsan_mutex_post_unlock(mu, mode);
  __tsan_mutex_pre_lock(mu, mode);
  __tsan_mutex_post_lock(mu, mode, 0);
  return result;
}

struct Unit {};
template <typename Call>
Unit Void(Call call) {
  call();
  return {};
}

}  // namespace

// The argument types as the ABI passes them: a Condition by reference; absl::Duration (int64 + uint32,
// trivially copyable) by value in two registers; absl::Time wraps one Duration.
using Cond = const void*;
struct DurationBits {
  long long rep_hi;
  unsigned rep_lo;
};
using Dur = DurationBits;
using Time = DurationBits;

#define OSH_REAL(type, name) static const auto real = Real<type>(name)

extern "C" {

void _ZN4absl7debian35Mutex4LockEv(void* mu) {
  OSH_REAL(void (*)(void*), "_ZN4absl7debian35Mutex4LockEv");
  Lock(mu, false, [&] { return Void([&] { real(mu); }); });
}
void _ZN4absl7debian35Mutex10ReaderLockEv(void* mu) {
  OSH_REAL(void (*)(void*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  Lock(mu, true, [&] { return Void([&] { real(mu); }); });
}
bool _ZN4absl7debian35Mutex7TryLockEv(void* mu) {
  OSH_REAL(bool (*)(void*), "_ZN4absl7debian35Mutex7TryLockEv");
  return TryLock(mu, false, [&] { return real(mu); });
}
bool _ZN4absl7debian35Mutex13ReaderTryLockEv(void* mu) {
  OSH_REAL(bool (*)(void*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  return TryLock(mu, true, [&] { return real(mu); });
}
void _ZN4absl7debian35Mutex6UnlockEv(void* mu) {
  OSH_REAL(void (*)(void*), "_ZN4absl7debian35Mutex6UnlockEv");
  Unlock(mu, false, [&] { real(mu); });
}
void _ZN4absl7debian35Mutex12ReaderUnlockEv(void* mu) {
  OSH_REAL(void (*)(void*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Unlock(mu, true, [&] { real(mu); });
}
void _ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(void* mu, Cond c) {
  OSH_REAL(void (*)(void*, Cond), "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  Lock(mu, false, [&] { return Void([&] { real(mu, c); }); });
}
void _ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE(void* mu, Cond c) {
  OSH_REAL(void (*)(void*, Cond), "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Lock(mu, true, [&] { return Void([&] { real(mu, c); }); });
}
bool _ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(void* mu, Cond c, Dur d) {
  OSH_REAL(bool (*)(void*, Cond, Dur), "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return Lock(mu, false, [&] { return real(mu, c, d); });
}
bool _ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE(void* mu, Cond c, Time t) {
  OSH_REAL(bool (*)(void*, Cond, Time), "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return Lock(mu, false, [&] { return real(mu, c, t); });
}
bool _ZN4absl7debian35Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(void* mu, Cond c, Dur d) {
  OSH_REAL(bool (*)(void*, Cond, Dur), "_ZN4absl7debian35Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return Lock(mu, true, [&] { return real(mu, c, d); });
}
void _ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(void* mu, Cond c) {
  OSH_REAL(void (*)(void*, Cond), "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  ReleaseWhile(mu, [&] { return Void([&] { real(mu, c); }); });
}
bool _ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(void* mu, Cond c, Dur d) {
  OSH_REAL(bool (*)(void*, Cond, Dur), "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return ReleaseWhile(mu, [&] { return real(mu, c, d); });
}
bool _ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(void* mu, Cond c, Time t) {
  OSH_REAL(bool (*)(void*, Cond, Time), "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return ReleaseWhile(mu, [&] { return real(mu, c, t); });
}
void _ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(void* cv, void* mu) {
  OSH_REAL(void (*)(void*, void*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  ReleaseWhile(mu, [&] { return Void([&] { real(cv, mu); }); });
}
bool _ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(void* cv, void* mu, Dur d) {
  OSH_REAL(bool (*)(void*, void*, Dur), "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  return ReleaseWhile(mu, [&] { return real(cv, mu, d); });
}
bool _ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(void* cv, void* mu, Time t) {
  OSH_REAL(bool (*)(void*, void*, Time), "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  return ReleaseWhile(mu, [&] { return real(cv, mu, t); });
}
// Notification: what happened before Notify happens before a wait that returns notified.
void _ZN4absl7debian312Notification6NotifyEv(void* n) {
  OSH_REAL(void (*)(void*), "_ZN4absl7debian312Notification6NotifyEv");
  __tsan_release(n);
  real(n);
}
void _ZNK4absl7debian312Notification19WaitForNotificationEv(void* n) {
  OSH_REAL(void (*)(void*), "_ZNK4absl7debian312Notification19WaitForNotificationEv");
  real(n);
  __tsan_acquire(n);
}
bool _ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(void* n, Dur d) {
  OSH_REAL(bool (*)(void*, Dur), "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = real(n, d);
  if (notified) __tsan_acquire(n);
  return notified;
}
bool _ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE(void* n, Time t) {
  OSH_REAL(bool (*)(void*, Time), "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool notified = real(n, t);
  if (notified) __tsan_acquire(n);
  return notified;
}

}  // extern "C"
