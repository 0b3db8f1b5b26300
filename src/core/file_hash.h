// File checksums for checkpoints and saved models: XXH3-64 (libxxhash) of a whole file, read in
// fixed-size blocks (never the whole file in memory), and a check that what is on the disk is what
// was written (the file's cached pages dropped after fsync, then re-read and hashed again).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace sft {

struct FileDigest {
  uint64_t size = 0;
  uint64_t xxh3 = 0;
};

// Size and XXH3-64 of the file's bytes, streamed; an Error names the file when it cannot be read.
FileDigest digest_file(const std::string& path);

// XXH3-64 of bytes in memory (what digest_file gives for a file holding them).
uint64_t xxh3_of(const void* data, size_t size);

// 16 lowercase hex digits, and back (false when `hex` is not 16 lowercase hex digits).
std::string xxh3_hex(uint64_t h);
bool parse_xxh3_hex(const std::string& hex, uint64_t* out);

// The digest of the file as written (its cached pages), then fsync, drop the pages from the page
// cache (posix_fadvise DONTNEED), read it again from the storage and compare: Error naming the
// file and the sizes or both checksums when they differ. Returns the digest. On filesystems that
// keep files only in memory (tmpfs) the second read comes from memory again.
FileDigest verify_file_on_storage(const std::string& path);

}  // namespace sft
