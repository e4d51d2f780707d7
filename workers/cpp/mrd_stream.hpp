// A small reader and writer for the MRD v1 (ISMRMRD) binary stream protocol.
//
// Only what a stdin -> stdout reconstruction needs: message ids, the packed acquisition and
// image headers, length-checked strings, and byte-offset/message-index bookkeeping so that
// every error can say where it happened.  All values on the wire are little-endian.
#pragma once

#include <fcntl.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the MRD stream is little-endian");

namespace mrd {

enum MessageId : uint16_t {
  kConfigFile = 1,
  kConfigText = 2,
  kHeader = 3,
  kClose = 4,
  kText = 5,
  kAcquisition = 1008,
  kImage = 1022,
  kWaveform = 1026,
  kNdArray = 1030,
};

// 1-based flag bits of AcquisitionHeader::flags.
enum Flag : int {
  kLastInSlice = 8,
  kLastInRepetition = 14,
  kIsNoiseMeasurement = 19,
  kIsParallelCalibration = 20,
  kIsParallelCalibrationAndImaging = 21,
  kIsReverse = 22,
  kIsNavigationData = 23,
  kIsPhasecorrData = 24,
  kLastInMeasurement = 25,
};

inline bool has_flag(uint64_t flags, int bit) { return (flags >> (bit - 1)) & 1u; }

#pragma pack(push, 2)
struct EncodingCounters {
  uint16_t kspace_encode_step_1, kspace_encode_step_2, average, slice, contrast, phase,
      repetition, set, segment;
  uint16_t user[8];
};

struct AcquisitionHeader {
  uint16_t version;
  uint64_t flags;
  uint32_t measurement_uid, scan_counter, acquisition_time_stamp;
  uint32_t physiology_time_stamp[3];
  uint16_t number_of_samples, available_channels, active_channels;
  uint64_t channel_mask[16];
  uint16_t discard_pre, discard_post, center_sample, encoding_space_ref, trajectory_dimensions;
  float sample_time_us;
  float position[3], read_dir[3], phase_dir[3], slice_dir[3], patient_table_position[3];
  EncodingCounters idx;
  int32_t user_int[8];
  float user_float[8];
};

struct ImageHeader {
  uint16_t version, data_type;
  uint64_t flags;
  uint32_t measurement_uid;
  uint16_t matrix_size[3];
  float field_of_view[3];
  uint16_t channels;
  float position[3], read_dir[3], phase_dir[3], slice_dir[3], patient_table_position[3];
  uint16_t average, slice, contrast, phase, repetition, set;
  uint32_t acquisition_time_stamp;
  uint32_t physiology_time_stamp[3];
  uint16_t image_type, image_index, image_series_index;
  int32_t user_int[8];
  float user_float[8];
  uint32_t attribute_string_len;
};
#pragma pack(pop)

static_assert(sizeof(AcquisitionHeader) == 340, "AcquisitionHeader is 340 bytes on the wire");
static_assert(sizeof(ImageHeader) == 198, "ImageHeader is 198 bytes on the wire");

constexpr uint16_t kFloat32 = 5;
constexpr uint16_t kMagnitude = 1;
constexpr size_t kConfigFileSize = 1024;
constexpr uint32_t kMaxStringBytes = 64u << 20;
constexpr uint64_t kMaxAcquisitionBytes = uint64_t{1} << 30;  // samples of one readout
constexpr double kMaxSkipBytes = 16.0 * (uint64_t{1} << 30);   // a payload we only skip
constexpr size_t kWaveformHeaderSize = 40;

// A protocol violation: what was expected, what was found, and where.
class StreamError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Reader {
 public:
  explicit Reader(std::FILE* source) : source_(source) {}

  uint64_t offset() const { return offset_; }
  uint64_t message_offset() const { return message_offset_; }
  uint64_t index() const { return index_; }

  // The next message id; false at a clean end of the stream (between messages).
  bool next_id(uint16_t* id) {
    message_offset_ = offset_;
    current_ = "message";
    unsigned char raw[2];
    size_t got = std::fread(raw, 1, 2, source_);
    offset_ += got;
    if (got == 0) return false;
    if (got == 1) fail("truncated message id: expected 2 bytes, found 1 before the end of the stream");
    *id = static_cast<uint16_t>(raw[0] | (raw[1] << 8));
    current_ = message_name(*id);
    return true;
  }

  static const char* message_name(uint16_t id) {
    switch (id) {
      case kConfigFile: return "CONFIG_FILE message";
      case kConfigText: return "CONFIG_TEXT message";
      case kHeader: return "HEADER message";
      case kClose: return "CLOSE message";
      case kText: return "TEXT message";
      case kAcquisition: return "ACQUISITION message";
      case kImage: return "IMAGE message";
      case kWaveform: return "WAVEFORM message";
      case kNdArray: return "NDARRAY message";
      default: return "message";
    }
  }

  // Call after a message's payload was read completely.
  void finish_message() { ++index_; }

  // After CLOSE: whether bytes follow it that have already arrived.  Never waits (the
  // descriptor is non-blocking for one read): a network peer may keep its end open.
  bool data_after_close() {
    const int fd = fileno(source_);
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return false;
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    const int byte = std::fgetc(source_);
    fcntl(fd, F_SETFL, flags);
    std::clearerr(source_);
    return byte != EOF;
  }

  void read(void* buffer, size_t nbytes, const char* what) {
    size_t got = std::fread(buffer, 1, nbytes, source_);
    offset_ += got;
    if (got != nbytes) {
      fail(std::string("truncated ") + current_ + ": expected " + std::to_string(nbytes) + " bytes of " + what +
           ", found " + std::to_string(got) + " before the end of the stream");
    }
  }

  template <typename T>
  T read_value(const char* what) {
    T value;
    read(&value, sizeof value, what);
    return value;
  }

  void skip(uint64_t nbytes, const char* what) {
    char scratch[1 << 16];
    while (nbytes > 0) {
      size_t n = nbytes < sizeof scratch ? static_cast<size_t>(nbytes) : sizeof scratch;
      read(scratch, n, what);
      nbytes -= n;
    }
  }

  // A uint32 length-prefixed string; one trailing NUL (counted by some writers) is dropped.
  std::string read_string(const char* what) {
    uint32_t length = read_value<uint32_t>(what);
    if (length > kMaxStringBytes) {
      fail(std::string(what) + " length prefix says " + std::to_string(length) +
           " bytes; expected at most " + std::to_string(kMaxStringBytes) + " (corrupt stream?)");
    }
    std::string text(length, '\0');
    if (length > 0) read(&text[0], length, what);
    if (!text.empty() && text.back() == '\0') text.pop_back();
    return text;
  }

  // Consume the payload of an IMAGE, WAVEFORM or NDARRAY message without keeping it.
  void skip_image() {
    auto head = read_value<ImageHeader>("ImageHeader");
    if (head.data_type < 1 || head.data_type > 8) {
      fail("image data_type " + std::to_string(head.data_type) + " is invalid: expected 1..8");
    }
    skip_payload(static_cast<double>(read_value<uint64_t>("attribute length")), 1,
                 "image attributes");
    const double count = static_cast<double>(head.channels) * head.matrix_size[0] *
                         head.matrix_size[1] * head.matrix_size[2];
    skip_payload(count, type_size(head.data_type), "image pixels");
  }

  void skip_waveform() {
    unsigned char head[kWaveformHeaderSize];
    read(head, sizeof head, "WaveformHeader");
    uint16_t samples = 0, channels = 0;
    std::memcpy(&samples, head + 28, 2);
    std::memcpy(&channels, head + 30, 2);
    skip_payload(static_cast<double>(samples) * channels, 4, "waveform samples");
  }

  void skip_ndarray() {
    auto type = read_value<uint16_t>("NDArray data type");
    read_value<uint16_t>("NDArray version");
    auto ndim = read_value<uint16_t>("NDArray dimensions");
    if (type < 1 || type > 8) fail("NDArray data type " + std::to_string(type) + " is invalid");
    double count = 1;
    for (uint16_t i = 0; i < ndim; ++i) {
      count *= static_cast<double>(read_value<uint64_t>("NDArray dims"));
    }
    skip_payload(count, type_size(type), "NDArray data");
  }

  [[noreturn]] void fail(const std::string& problem) const {
    throw StreamError(problem + " (at byte offset " + std::to_string(message_offset_) +
                      ", message index " + std::to_string(index_) + ")");
  }

 private:
  // Bytes per item of ISMRMRD data types 1..8 (uint16 ... complex128).
  static uint64_t type_size(uint16_t type) {
    static const uint64_t sizes[] = {0, 2, 2, 4, 4, 4, 8, 8, 16};
    return sizes[type];
  }

  // Skip ``count`` items of ``item`` bytes, refusing absurd sizes before reading.
  void skip_payload(double count, uint64_t item, const char* what) {
    const double bytes = count * static_cast<double>(item);
    if (bytes > kMaxSkipBytes) {
      char size[32];
      std::snprintf(size, sizeof size, "%.3g", bytes / (uint64_t{1} << 30));
      fail(std::string(what) + " would be " + size +
           " GiB: expected at most 16 GiB (corrupt header?)");
    }
    skip(static_cast<uint64_t>(bytes), what);
  }

  std::FILE* source_;
  uint64_t offset_ = 0;
  uint64_t message_offset_ = 0;
  uint64_t index_ = 0;
  const char* current_ = "message";
};

class Writer {
 public:
  explicit Writer(std::FILE* sink) : sink_(sink) {}

  void write_header(const std::string& xml) { write_string(kHeader, xml); }
  void write_text(const std::string& text) { write_string(kText, text); }
  void write_close() {
    write_id(kClose);
    flush();
  }

  // An image message: header (its attribute length is set here), attributes, pixels.
  void write_image(ImageHeader head, const std::string& attributes, const float* pixels,
                   size_t count) {
    head.attribute_string_len = static_cast<uint32_t>(attributes.size());
    write_id(kImage);
    put(&head, sizeof head);
    uint64_t length = attributes.size();
    put(&length, sizeof length);
    put(attributes.data(), attributes.size());
    put(pixels, count * sizeof(float));
    flush();
  }

  void flush() {
    if (std::fflush(sink_) != 0) throw std::runtime_error("cannot write to the output");
  }

 private:
  void write_id(uint16_t id) { put(&id, sizeof id); }
  void write_string(uint16_t id, const std::string& text) {
    write_id(id);
    uint32_t length = static_cast<uint32_t>(text.size());
    put(&length, sizeof length);
    put(text.data(), text.size());
  }
  void put(const void* data, size_t nbytes) {
    if (nbytes > 0 && std::fwrite(data, 1, nbytes, sink_) != nbytes) {
      throw std::runtime_error("cannot write to the output");
    }
  }

  std::FILE* sink_;
};

}  // namespace mrd
