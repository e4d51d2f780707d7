// Image headers and meta attributes filled from the reference acquisition of a unit (the
// line nearest the k-space centre), the same way as the Python recon.
#pragma once

#include <array>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "header_xml.hpp"
#include "mrd_stream.hpp"

namespace mrd {

constexpr uint16_t kImageSeriesIndex = 1;

inline ImageHeader image_header(const AcquisitionHeader& ref, const Encoding& enc,
                                const std::array<int, 3>& matrix) {
  ImageHeader h;
  std::memset(&h, 0, sizeof h);
  h.version = 1;
  h.data_type = kFloat32;
  h.measurement_uid = ref.measurement_uid;
  for (int i = 0; i < 3; ++i) {
    h.matrix_size[i] = static_cast<uint16_t>(matrix[i]);
    h.field_of_view[i] = enc.recon_fov[i];
    h.position[i] = ref.position[i];
    h.read_dir[i] = ref.read_dir[i];
    h.phase_dir[i] = ref.phase_dir[i];
    h.slice_dir[i] = ref.slice_dir[i];
    h.patient_table_position[i] = ref.patient_table_position[i];
    h.physiology_time_stamp[i] = ref.physiology_time_stamp[i];
  }
  h.channels = 1;
  h.average = ref.idx.average;
  h.slice = ref.idx.slice;
  h.contrast = ref.idx.contrast;
  h.phase = ref.idx.phase;
  h.repetition = ref.idx.repetition;
  h.set = ref.idx.set;
  h.acquisition_time_stamp = ref.acquisition_time_stamp;
  h.image_type = kMagnitude;
  h.image_series_index = kImageSeriesIndex;
  return h;
}

// Shortest text that reads back as the same float32, positional, no trailing zeros or
// point ("0", "150", "0.70710677"): what the Python recon writes.
inline std::string format_float(float value) {
  char text[64];
  auto result = std::to_chars(text, text + sizeof text, value, std::chars_format::fixed);
  return std::string(text, result.ptr);
}

inline std::string meta_entry(const std::string& name, const std::vector<std::string>& values) {
  std::string out = "<meta><name>" + name + "</name>";
  for (const auto& value : values) out += "<value>" + value + "</value>";
  return out + "</meta>";
}

inline std::vector<std::string> floats(const float (&values)[3]) {
  return {format_float(values[0]), format_float(values[1]), format_float(values[2])};
}

// ISMRMRD meta attributes: role, processing history, row/column directions, and a window
// spanning the magnitude range (``top`` is the image maximum).
inline std::string image_attributes(const ImageHeader& head, float top) {
  return "<?xml version='1.0' encoding='UTF-8'?>\n<ismrmrdMeta>" +
         meta_entry("DataRole", {"Image"}) + meta_entry("ImageProcessingHistory", {"FFT", "RSS"}) +
         meta_entry("ImageRowDir", floats(head.read_dir)) +
         meta_entry("ImageColumnDir", floats(head.phase_dir)) +
         meta_entry("WindowCenter", {format_float(top / 2.0f)}) +
         meta_entry("WindowWidth", {format_float(top)}) + "</ismrmrdMeta>";
}

}  // namespace mrd
