// UTF-8 helpers shared by the tokenizers: validation, code-point stepping, the lossy decoding
// that HF tokenizers applies to byte sequences (Rust String::from_utf8_lossy), Python's
// str.isspace(), and GPT-2's byte <-> printable-character map used by byte-level BPE.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace sft::utf8 {

// Byte offset of the first invalid sequence, or npos when `s` is valid UTF-8 (no surrogates,
// no overlongs, at most U+10FFFF).
size_t find_invalid(std::string_view s);

// Length of the (valid) UTF-8 sequence starting with lead byte `c`: 1..4.
inline int seq_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

// Decodes the code point at s[i] (s must be valid UTF-8) and advances i past it.
char32_t next(std::string_view s, size_t& i);

// Code point of the last character of a non-empty valid string.
char32_t last(std::string_view s);

void append(std::string& out, char32_t cp);

// Bytes -> text, each maximal invalid subsequence replaced by U+FFFD (Rust from_utf8_lossy,
// which is also Python's errors="replace").
std::string lossy(std::string_view bytes);

// Python str.isspace() for one code point (what str.strip() removes).
bool is_py_space(char32_t cp);

// GPT-2 bytes_to_unicode(): byte b <-> a printable code point; byte_to_text[b] is its UTF-8.
struct ByteLevelMap {
  std::array<std::string, 256> byte_to_text;
  std::array<int16_t, 324> cp_to_byte;  // -1 where the code point is not in the map
};
const ByteLevelMap& byte_level_map();

}  // namespace sft::utf8
