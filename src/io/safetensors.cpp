// safetensors reader and writer (see safetensors.h). Reference: huggingface/safetensors
// src/tensor.rs (Metadata::validate, prepare) and ecosystem.md §1.2. The reader only ever touches
// bytes inside [0, file size): every offset is checked before a pointer is formed.
#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/check.h"

namespace sft {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

constexpr uint64_t kMaxHeaderSize = 100'000'000;  // MAX_HEADER_SIZE of the reference reader

// Every dtype of the format: bits per element and the reference enum's order (its writer sorts
// tensors by this rank, descending).
struct DTypeRow {
  const char* name;
  int bits;
  int rank;
};
//                                  name           bits rank
constexpr DTypeRow kDTypes[] = {{"BOOL",         8,   0},  {"F4",           4,   1},
                                {"F6_E2M3",      6,   2},  {"F6_E3M2",      6,   3},
                                {"U8",           8,   4},  {"I8",           8,   5},
                                {"F8_E5M2",      8,   6},  {"F8_E4M3",      8,   7},
                                {"F8_E8M0",      8,   8},  {"F8_E4M3FNUZ",  8,   9},
                                {"F8_E5M2FNUZ",  8,   10}, {"I16",          16,  11},
                                {"U16",          16,  12}, {"F16",          16,  13},
                                {"BF16",         16,  14}, {"I32",          32,  15},
                                {"U32",          32,  16}, {"F32",          32,  17},
                                {"C64",          64,  18}, {"F64",          64,  19},
                                {"I64",          64,  20}, {"U64",          64,  21}};

const DTypeRow* find_dtype(std::string_view name) {
  for (const DTypeRow& r : kDTypes)
    if (name == r.name) return &r;
  return nullptr;
}

bool is_writer_dtype(std::string_view d) {
  return d == "F32" || d == "BF16" || d == "F16" || d == "I32" || d == "I64";
}

std::string json_type(const nlohmann::json& v) {
  if (v.is_number_float()) return fmt::format("{} (a float)", v.dump());
  if (v.is_number_integer()) return fmt::format("{} (an integer)", v.dump());
  if (v.is_string()) return fmt::format("{} (a string)", v.dump());
  return std::string(v.type_name());
}

}  // namespace

// ---------------------------------------------------------------- small helpers

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string SafetensorsTensorInfo::shape_str() const {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

std::optional<DType> safetensors_float_dtype(std::string_view dtype) {
  if (dtype == "F32") return DType::f32;
  if (dtype == "BF16") return DType::bf16;
  if (dtype == "F16") return DType::f16;
  return std::nullopt;
}

size_t safetensors_dtype_size(std::string_view dtype) {
  return is_writer_dtype(dtype) ? size_t(find_dtype(dtype)->bits / 8) : 0;
}

uint64_t safetensors_nbytes(std::string_view dtype, const std::vector<int64_t>& shape) {
  uint64_t n = safetensors_dtype_size(dtype);
  for (int64_t d : shape) n *= uint64_t(d);
  return n;
}

// ---------------------------------------------------------------- reader

void SafetensorsFile::Unmap::operator()(void* p) const {
  if (p) ::munmap(p, size);
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("safetensors", "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("safetensors", "{}: not a regular file", path);
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail("safetensors", "{}: file is {} bytes, shorter than the 8-byte header length", path, size);
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (p == MAP_FAILED) fail("safetensors", "{}: mmap failed: {}", path, std::strerror(map_errno));
  map_ = std::unique_ptr<void, Unmap>(p, Unmap{size});
  parse(static_cast<const uint8_t*>(p), size);
}

void SafetensorsFile::parse(const uint8_t* bytes, uint64_t file_size) {
  const std::string& f = path_;
  uint64_t n = 0;
  std::memcpy(&n, bytes, 8);
  SFT_CHECK(n <= kMaxHeaderSize, "safetensors", "{}: header length {} exceeds the limit of {} bytes", f, n,
            kMaxHeaderSize);
  SFT_CHECK(n <= file_size - 8, "safetensors", "{}: header length {} exceeds the file size ({} bytes after the length)",
            f, n, file_size - 8);
  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), size_t(n));
  SFT_CHECK(!text.empty() && text[0] == '{', "safetensors", "{}: header does not start with '{{'", f);
  std::string err;
  std::optional<nlohmann::json> header = parse_json_strict(text, &err);
  SFT_CHECK(header.has_value(), "safetensors", "{}: header is not valid JSON: {}", f, err);
  SFT_CHECK(header->is_object(), "safetensors", "{}: header is {}, expected a JSON object", f, header->type_name());

  const uint8_t* buffer = bytes + 8 + n;
  const uint64_t buffer_size = file_size - 8 - n;
  for (auto& [name, v] : header->items()) {
    if (name == "__metadata__") {
      SFT_CHECK(v.is_object(), "safetensors", "{}: __metadata__ is {}, expected an object of strings", f,
                json_type(v));
      for (auto& [k, s] : v.items()) {
        SFT_CHECK(s.is_string(), "safetensors", "{}: __metadata__ '{}' is {}, expected a string", f, k,
                  json_type(s));
        metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    SafetensorsTensorInfo t;
    t.name = name;
    SFT_CHECK(v.is_object(), "safetensors", "{}: tensor '{}': entry is {}, expected an object", f, name,
              json_type(v));
    for (const char* key : {"dtype", "shape", "data_offsets"})
      SFT_CHECK(v.contains(key), "safetensors", "{}: tensor '{}': missing '{}'", f, name, key);
    const auto& jd = v["dtype"];
    SFT_CHECK(jd.is_string(), "safetensors", "{}: tensor '{}': dtype is {}, expected a string", f, name, json_type(jd));
    t.dtype = jd.get<std::string>();
    const DTypeRow* dt = find_dtype(t.dtype);
    SFT_CHECK(dt, "safetensors", "{}: tensor '{}': unknown dtype '{}'", f, name, t.dtype);

    const auto& js = v["shape"];
    SFT_CHECK(js.is_array(), "safetensors", "{}: tensor '{}': shape is {}, expected an array", f, name, json_type(js));
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : js) {
      SFT_CHECK(d.is_number_unsigned() || d.is_number_integer(), "safetensors",
                "{}: tensor '{}': shape entry {} is not an integer", f, name, json_type(d));
      SFT_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= uint64_t(INT64_MAX), "safetensors",
                "{}: tensor '{}': shape entry {} is negative or too large", f, name, d.dump());
      t.shape.push_back(d.get<int64_t>());
      overflow |= __builtin_mul_overflow(numel, d.get<uint64_t>(), &numel);
    }
    uint64_t nbits = 0;
    overflow |= __builtin_mul_overflow(numel, uint64_t(dt->bits), &nbits);
    SFT_CHECK(!overflow, "safetensors", "{}: tensor '{}': shape {} overflows the byte count", f, name, t.shape_str());
    SFT_CHECK(nbits % 8 == 0, "safetensors", "{}: tensor '{}': {} elements of {} do not fill whole bytes", f, name,
              numel, t.dtype);

    const auto& jo = v["data_offsets"];
    SFT_CHECK(jo.is_array() && jo.size() == 2 && jo[0].is_number_unsigned() && jo[1].is_number_unsigned(),
              "safetensors", "{}: tensor '{}': data_offsets is {}, expected [BEGIN, END] non-negative integers", f,
              name, jo.dump());
    t.begin = jo[0].get<uint64_t>();
    t.end = jo[1].get<uint64_t>();
    SFT_CHECK(t.begin <= t.end, "safetensors", "{}: tensor '{}': data_offsets [{}, {}] begin is after end", f, name,
              t.begin, t.end);
    SFT_CHECK(t.end - t.begin == nbits / 8, "safetensors",
              "{}: tensor '{}': data_offsets [{}, {}] span {} bytes, expected {} for {} {}", f, name, t.begin, t.end,
              t.end - t.begin, nbits / 8, t.dtype, t.shape_str());
    SFT_CHECK(t.end <= buffer_size, "safetensors",
              "{}: tensor '{}': data_offsets end {} is beyond the data buffer ({} bytes)", f, name, t.end,
              buffer_size);
    t.data = buffer + t.begin;
    tensors_.push_back(std::move(t));
  }

  // The buffer must be exactly the tensors, back to back from 0 (no holes, overlaps or tail).
  std::sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const SafetensorsTensorInfo& t = tensors_[i];
    if (t.begin > expected && i == 0)
      fail("safetensors", "{}: data buffer does not start at 0: first tensor '{}' begins at {}", f, t.name, t.begin);
    if (t.begin > expected)
      fail("safetensors", "{}: hole of {} bytes before tensor '{}' (data_offsets [{}, {}]; '{}' ends at {})", f,
           t.begin - expected, t.name, t.begin, t.end, tensors_[i - 1].name, expected);
    if (t.begin < expected)
      fail("safetensors", "{}: tensor '{}' (data_offsets [{}, {}]) overlaps tensor '{}' ([{}, {}])", f, t.name,
           t.begin, t.end, tensors_[i - 1].name, tensors_[i - 1].begin, tensors_[i - 1].end);
    expected = t.end;
  }
  SFT_CHECK(expected == buffer_size, "safetensors", "{}: {} trailing bytes after the last tensor (data ends at {}, "
            "buffer is {} bytes)", f, buffer_size - expected, expected, buffer_size);
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const SafetensorsTensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsTensorInfo& SafetensorsFile::at(std::string_view name) const {
  const SafetensorsTensorInfo* t = find(name);
  if (!t) fail("safetensors", "{}: no tensor '{}'", path_, name);
  return *t;
}

// ---------------------------------------------------------------- writer

SafetensorsWriteItem SafetensorsWriteItem::from_tensor(std::string name, const Tensor& t) {
  SFT_CHECK(t.device == Device::cpu, "safetensors", "tensor '{}' is not in host memory", name);
  return {std::move(name), t.data, std::string(dtype_name(t.dtype)),
          std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.ndim)};
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteItem>& tensors,
                       const std::map<std::string, std::string>& metadata, std::optional<DType> float_dtype) {
  write_safetensors_streamed(path, tensors, [&](size_t i) { return tensors[i].data; }, metadata, float_dtype);
}

void write_safetensors_streamed(const std::string& path, const std::vector<SafetensorsWriteItem>& tensors,
                                const std::function<const void*(size_t index)>& fetch,
                                const std::map<std::string, std::string>& metadata, std::optional<DType> float_dtype) {
  using json = nlohmann::json;
  auto quote = [](const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); };
  auto out_dtype = [&](const SafetensorsWriteItem& t) {
    return float_dtype && safetensors_float_dtype(t.dtype) ? std::string(dtype_name(*float_dtype)) : t.dtype;
  };

  std::vector<const SafetensorsWriteItem*> order;
  for (const SafetensorsWriteItem& t : tensors) {
    SFT_CHECK(is_writer_dtype(t.dtype), "safetensors", "{}: tensor '{}': cannot write dtype '{}'", path, t.name,
              t.dtype);
    SFT_CHECK(t.name != "__metadata__", "safetensors", "{}: '__metadata__' is not a tensor name", path);
    for (int64_t d : t.shape) SFT_CHECK(d >= 0, "safetensors", "{}: tensor '{}': negative dimension", path, t.name);
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(), [&](const SafetensorsWriteItem* a, const SafetensorsWriteItem* b) {
    const int ra = find_dtype(out_dtype(*a))->rank, rb = find_dtype(out_dtype(*b))->rank;
    return ra != rb ? ra > rb : a->name < b->name;
  });

  std::map<std::string, std::string> meta = metadata;
  meta.emplace("format", "pt");
  std::string header = "{\"__metadata__\":{";
  for (auto it = meta.begin(); it != meta.end(); ++it)
    header += fmt::format("{}{}:{}", it == meta.begin() ? "" : ",", quote(it->first), quote(it->second));
  header += "}";
  uint64_t offset = 0;
  std::vector<std::string> seen;
  for (const SafetensorsWriteItem* t : order) {
    const uint64_t nb = safetensors_nbytes(out_dtype(*t), t->shape);
    header += fmt::format(",{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}", quote(t->name),
                          out_dtype(*t), fmt::join(t->shape, ","), offset, offset + nb);
    offset += nb;
    seen.push_back(t->name);
  }
  header += "}";
  std::sort(seen.begin(), seen.end());
  SFT_CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end(), "safetensors",
            "{}: duplicate tensor name '{}'", path, *std::adjacent_find(seen.begin(), seen.end()));
  header.append((8 - header.size() % 8) % 8, ' ');

  AtomicFile file(path, "safetensors");
  const uint64_t n = header.size();
  file.write(&n, 8);
  file.write(header.data(), header.size());
  std::vector<float> f32;
  std::vector<uint8_t> out;
  for (const SafetensorsWriteItem* t : order) {
    const uint64_t count = safetensors_nbytes(t->dtype, t->shape) / safetensors_dtype_size(t->dtype);
    const void* data = count > 0 ? fetch(size_t(t - tensors.data())) : nullptr;
    SFT_CHECK(data || count == 0, "safetensors", "{}: tensor '{}' has no data", path, t->name);
    const std::string dst = out_dtype(*t);
    if (dst == t->dtype) {
      file.write(data, count * safetensors_dtype_size(dst));
      continue;
    }
    // Float conversion in chunks, through f32 when neither side is f32.
    const DType from = *safetensors_float_dtype(t->dtype), to = *safetensors_float_dtype(dst);
    const size_t chunk = size_t(1) << 20;
    f32.resize(chunk);
    out.resize(chunk * dtype_size(to));
    for (uint64_t i = 0; i < count; i += chunk) {
      const size_t m = size_t(std::min<uint64_t>(chunk, count - i));
      const uint8_t* src = static_cast<const uint8_t*>(data) + i * dtype_size(from);
      const float* s32 = reinterpret_cast<const float*>(src);
      if (from != DType::f32) {
        convert_to_f32(src, from, f32.data(), m);
        s32 = f32.data();
      }
      if (to == DType::f32) {
        file.write(s32, m * 4);
      } else {
        convert_from_f32(s32, out.data(), to, m);
        file.write(out.data(), m * dtype_size(to));
      }
    }
  }
  file.commit();
}

}  // namespace sft
