// A minimal C++ consumer of our files, built against the ISMRMRD C++ library (Debian's
// libismrmrd-dev) by tests/test_data_safety.py.  It does what every C++ tool of that library
// does with a header (deserialize it, serialize it again: ismrmrd_hdf5_to_stream and the C++
// recons re-serialise every header they pass on) and reads acquisitions through
// ISMRMRD::Dataset.  Exit status 0 and one summary line on success; 1 and the library's
// exception text on stderr otherwise.
//
//   ismrmrd_consumer h5 FILE GROUP   header of an ISMRMRD HDF5 group, then its acquisitions
//   ismrmrd_consumer stream FILE     header of an MRD v1 stream (its first message)
#include <ismrmrd/dataset.h>
#include <ismrmrd/ismrmrd.h>
#include <ismrmrd/xml.h>

#include <cmath>
#include <complex>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace {

constexpr uint16_t kHeaderId = 3;

std::string header_of_stream(const char* path) {
  std::ifstream in(path, std::ios::binary);
  uint16_t id = 0;
  uint32_t length = 0;
  in.read(reinterpret_cast<char*>(&id), sizeof id);
  if (!in || id != kHeaderId) throw std::runtime_error("expected a HEADER message first");
  in.read(reinterpret_cast<char*>(&length), sizeof length);
  std::string xml(length, '\0');
  in.read(&xml[0], length);
  if (!in) throw std::runtime_error("truncated HEADER message");
  return xml;
}

// deserialize -> serialize -> deserialize, as a C++ tool that passes the header on does
ISMRMRD::IsmrmrdHeader round_trip(const std::string& xml) {
  ISMRMRD::IsmrmrdHeader header;
  ISMRMRD::deserialize(xml.c_str(), header);
  std::stringstream again;
  ISMRMRD::serialize(header, again);
  ISMRMRD::IsmrmrdHeader reread;
  ISMRMRD::deserialize(again.str().c_str(), reread);
  return reread;
}

std::string describe(const ISMRMRD::IsmrmrdHeader& header) {
  const auto& size = header.encoding.at(0).encodedSpace.matrixSize;
  std::ostringstream text;
  text << "encoded " << size.x << " " << size.y << " " << size.z;
  return text.str();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string kind = argc > 2 ? argv[1] : "";
    if (kind == "stream" && argc == 3) {
      std::cout << describe(round_trip(header_of_stream(argv[2]))) << "\n";
      return 0;
    }
    if (kind != "h5" || argc != 4) {
      std::cerr << "usage: ismrmrd_consumer h5 FILE GROUP | stream FILE\n";
      return 2;
    }
    ISMRMRD::Dataset dataset(argv[2], argv[3], false);
    std::string xml;
    dataset.readHeader(xml);
    const ISMRMRD::IsmrmrdHeader header = round_trip(xml);
    const uint32_t count = dataset.getNumberOfAcquisitions();
    double energy = 0.0;
    uint64_t samples = 0;
    for (uint32_t i = 0; i < count; ++i) {
      ISMRMRD::Acquisition acq;
      dataset.readAcquisition(i, acq);
      const auto* data = acq.getDataPtr();
      const size_t n = acq.getNumberOfDataElements();
      for (size_t k = 0; k < n; ++k) energy += std::norm(data[k]);
      samples += n;
    }
    std::cout << describe(header) << " acquisitions " << count << " samples " << samples
              << " energy " << energy << "\n";
    return 0;
  } catch (const std::exception& exc) {
    std::cerr << "error: " << exc.what() << "\n";
    return 1;
  }
}
