#include "trm/data/npy.h"

#include <gtest/gtest.h>

#include "test_util.h"
#include "trm/common/error.h"
#include "trm/data/dataset_reader.h"

namespace trm::data {
namespace {

using testing::RunCommand;
using testing::TempDir;

const std::string kPython = "/usr/bin/python3";

TEST(Npy, HeaderIsNumpys) {
  // Expected bytes as numpy.save (1.x) writes them, checked with NumPy itself below too.
  const std::string h = NpyHeader({3, 4});
  ASSERT_EQ(h.size(), 128u);
  EXPECT_EQ(h.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const std::string dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (3, 4), }";
  EXPECT_EQ(h.substr(10, dict.size()), dict);
  EXPECT_EQ(h.find_first_not_of(' ', 10 + dict.size()), h.size() - 1);  // spaces, then '\n'
  EXPECT_EQ(h.back(), '\n');
  const std::string dict1 = "{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }";
  EXPECT_EQ(NpyHeader({5}).substr(10, dict1.size()), dict1);
}

TEST(Npy, WriteThenMapRoundTrips) {
  TempDir dir;
  std::vector<int32_t> v(6 * 7);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>(i) - 20;
  NpyInt32Writer w(dir / "a.npy", {6, 7});
  w.Write(v.data(), 10);
  w.Write(v.data() + 10, v.size() - 10);
  EXPECT_EQ(w.Close().size(), 64u);
  const NpyInt32Array a = NpyInt32Array::Open(dir / "a.npy");
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{6, 7}));
  EXPECT_EQ(std::vector<int32_t>(a.data(), a.data() + a.size()), v);

  NpyInt32Writer short_write(dir / "b.npy", {2, 2});
  short_write.Write(v.data(), 3);
  EXPECT_THROW(short_write.Close(), Error);
}

TEST(Npy, NumpyReadsOursAndWeReadNumpys) {
  TempDir dir;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{3, 4}, {5}, {0, 9}, {1234567, 0}}) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    std::vector<int32_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<int32_t>(i * 7919 % 100003) - 50000;
    NpyInt32Writer w(dir / "ours.npy", shape);
    w.Write(v.data(), v.size());
    w.Close();
    // NumPy loads it and re-saving gives the very same bytes.
    const auto r = RunCommand(kPython + " -c \"import numpy as np, io, sys; a = np.load(sys.argv[1]); "
                              "b = io.BytesIO(); np.save(b, a); "
                              "assert a.dtype == np.int32 and b.getvalue() == open(sys.argv[1], 'rb').read(); "
                              "print(a.shape, int(a.sum()))\" " + (dir / "ours.npy"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    int64_t sum = 0;
    for (int32_t x : v) sum += x;
    std::string shape_repr = "(";
    for (size_t i = 0; i < shape.size(); ++i) shape_repr += (i ? ", " : "") + std::to_string(shape[i]);
    shape_repr += shape.size() == 1 ? ",)" : ")";
    EXPECT_EQ(r.out, shape_repr + " " + std::to_string(sum) + "\n");
  }
  // Version 2.0 headers and non-minimal padding are accepted too.
  const auto r = RunCommand(kPython + " -c \"import numpy as np, sys; "
                            "a = np.arange(12, dtype=np.int32).reshape(3, 4); "
                            "np.lib.format.write_array(open(sys.argv[1], 'wb'), a, version=(2, 0)); "
                            "np.save(sys.argv[2], a.astype(np.int64))\" " + (dir / "v2.npy") + " " + (dir / "i8.npy"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const NpyInt32Array a = NpyInt32Array::Open(dir / "v2.npy");
  EXPECT_EQ(a.shape(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(a.data()[11], 11);
  try {
    NpyInt32Array::Open(dir / "i8.npy");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss);
    EXPECT_NE(std::string(e.what()).find("'<i8', expected '<i4'"), std::string::npos) << e.what();
  }
}

TEST(Npy, CorruptFilesAreDataLoss) {
  TempDir dir;
  testing::WriteText(dir / "junk.npy", "not numpy at all");
  EXPECT_THROW(NpyInt32Array::Open(dir / "junk.npy"), Error);
  std::string good = NpyHeader({2, 2}) + std::string(12, '\0');  // 4 bytes short
  testing::WriteText(dir / "short.npy", good);
  try {
    NpyInt32Array::Open(dir / "short.npy");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos);
  }
  try {
    NpyInt32Array::Open(dir / "missing.npy");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
  }
}

// A dataset written the way the reference Python builder writes it (json.dump + np.save of
// int32 arrays) loads unchanged.
TEST(Npy, ReferenceStyleDatasetLoads) {
  TempDir dir;
  const std::string script =
      "import json, os, sys, numpy as np\n"
      "out = sys.argv[1]\n"
      "for split, n in (('train', 5), ('test', 2)):\n"
      "    d = os.path.join(out, split); os.makedirs(d)\n"
      "    x = np.arange(n * 8, dtype=np.int32).reshape(n, 8)\n"
      "    np.save(os.path.join(d, 'all__inputs.npy'), x)\n"
      "    np.save(os.path.join(d, 'all__labels.npy'), x + 1)\n"
      "    np.save(os.path.join(d, 'all__puzzle_identifiers.npy'), np.arange(n, dtype=np.int32))\n"
      "    np.save(os.path.join(d, 'all__puzzle_indices.npy'), np.arange(n + 1, dtype=np.int32))\n"
      "    np.save(os.path.join(d, 'all__group_indices.npy'), np.arange(n + 1, dtype=np.int32))\n"
      "    json.dump(dict(pad_id=50257, ignore_label_id=-100, blank_identifier_id=0, vocab_size=50266,\n"
      "                   seq_len=8, num_puzzle_identifiers=n, total_groups=n, mean_puzzle_examples=1.0,\n"
      "                   total_puzzles=n, sets=['all']), open(os.path.join(d, 'dataset.json'), 'w'))\n";
  testing::WriteText(dir / "make.py", script);
  const auto r = RunCommand(kPython + " " + (dir / "make.py") + " " + (dir / "ds"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const DatasetSplit train = DatasetSplit::Open(dir / "ds", "train");
  EXPECT_EQ(train.rows(), 5);
  EXPECT_EQ(train.meta().seq_len, 8);
  EXPECT_EQ(train.meta().pad_id, 50257);
  EXPECT_EQ(train.inputs(4)[7], 39);
  EXPECT_EQ(train.labels(4)[7], 40);
}

}  // namespace
}  // namespace trm::data
