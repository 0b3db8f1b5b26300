// XXH3-64 file digests read in 4 MiB blocks, and the write-then-reread check (see file_hash.h).
#include "core/file_hash.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>
#include <xxhash.h>

#include "core/check.h"

namespace sft {

namespace {

constexpr size_t kBlock = size_t(4) << 20;

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

struct HashState {
  XXH3_state_t* s = XXH3_createState();
  ~HashState() { XXH3_freeState(s); }
};

}  // namespace

FileDigest digest_file(const std::string& path) {
  const Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  SFT_CHECK(f.fd >= 0, "checksum", "cannot open {}: {}", path, std::strerror(errno));
  ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  HashState h;
  SFT_CHECK(h.s != nullptr && XXH3_64bits_reset(h.s) == XXH_OK, "checksum", "cannot set up XXH3 for {}", path);
  std::vector<char> buf(kBlock);
  FileDigest d;
  for (;;) {
    const ssize_t n = ::read(f.fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    SFT_CHECK(n >= 0, "checksum", "read of {} failed at byte {}: {}", path, d.size, std::strerror(errno));
    if (n == 0) break;
    XXH3_64bits_update(h.s, buf.data(), size_t(n));
    d.size += uint64_t(n);
  }
  d.xxh3 = XXH3_64bits_digest(h.s);
  return d;
}

uint64_t xxh3_of(const void* data, size_t size) { return XXH3_64bits(data, size); }

std::string xxh3_hex(uint64_t h) { return fmt::format("{:016x}", h); }

bool parse_xxh3_hex(const std::string& hex, uint64_t* out) {
  if (hex.size() != 16) return false;
  uint64_t v = 0;
  for (char c : hex) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | uint64_t(d);
  }
  *out = v;
  return true;
}

FileDigest verify_file_on_storage(const std::string& path) {
  const FileDigest expected = digest_file(path);
  {
    const Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    SFT_CHECK(f.fd >= 0, "verify", "cannot open {}: {}", path, std::strerror(errno));
    SFT_CHECK(::fsync(f.fd) == 0, "verify", "fsync of {} failed: {}", path, std::strerror(errno));
    ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_DONTNEED);  // advice only: the check stands without it
  }
  const FileDigest again = digest_file(path);
  SFT_CHECK(again.size == expected.size, "verify", "{} reads back {} bytes after writing, expected {} (truncated on the storage)",
            path, again.size, expected.size);
  SFT_CHECK(again.xxh3 == expected.xxh3, "verify",
            "{} reads back with XXH3 {} after writing, expected {} (the bytes on the storage differ from those written)",
            path, xxh3_hex(again.xxh3), xxh3_hex(expected.xxh3));
  return again;
}

}  // namespace sft
