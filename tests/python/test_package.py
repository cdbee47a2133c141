"""The installed Python package `vae` (tests/python/run_python_tests.sh):
trains a small model on a generated data set, then checks the array calls
against each other, against a reloaded checkpoint and against the CLI's
evaluation of the same rows."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest

import numpy as np

import vae

SIDE = 6  # 6x6 pictures, D = 36
TRAIN_ROWS = 240
TEST_ROWS = 45  # two evaluation batches of 16 and a remainder


def pictures(rows, seed):
    """Blurry bars at random places, float32 in [0,1], exact multiples of 1/255."""
    rng = np.random.default_rng(seed)
    images = np.zeros((rows, SIDE, SIDE), dtype=np.float32)
    for i in range(rows):
        column = rng.integers(0, SIDE)
        images[i, :, column] = 1.0
        images[i] = np.maximum(images[i], rng.integers(0, 60, (SIDE, SIDE)) / 255.0)
    return np.round(images * 255.0).astype(np.float32) / np.float32(255.0)


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.mkdtemp(prefix="vae-python-test-")
        cls.data = os.path.join(cls.folder, "data")
        os.makedirs(cls.data)
        np.save(os.path.join(cls.data, "train.npy"), pictures(TRAIN_ROWS, 1))
        cls.test_images = pictures(TEST_ROWS, 2)
        np.save(os.path.join(cls.data, "test.npy"), cls.test_images)
        cls.settings = {
            "data.path": cls.data,
            "model.hidden": [24],
            "model.latent_dim": 3,
            "train.batch_size": 20,
            "train.eval_batch_size": 16,
            "train.eval_every_epochs": 0,
            "train.warmup_steps": 0,
            "output.image_every_epochs": 0,
        }
        cls.run_folder = os.path.join(cls.folder, "run")
        cls.model = vae.train(cls.settings, out_dir=cls.run_folder, epochs=2)
        cls.checkpoint = os.path.join(cls.run_folder, "checkpoint.safetensors")
        cls.x = cls.test_images.reshape(TEST_ROWS, -1)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder, ignore_errors=True)

    def test_training_ran_and_wrote_the_run(self):
        self.assertEqual(self.model.step, 2 * TRAIN_ROWS // 20)
        self.assertEqual(self.model.input_dim, SIDE * SIDE)
        self.assertEqual(self.model.latent_dim, 3)
        for name in ("checkpoint.safetensors", "metrics.jsonl", "config.ini"):
            self.assertTrue(os.path.exists(os.path.join(self.run_folder, name)), name)
        self.assertIn("latent_dim = 3", self.model.config)

    def test_shapes_and_finite_values(self):
        mu, logvar = self.model.encode(self.test_images)  # [n, 6, 6] pictures are flattened
        self.assertEqual(mu.shape, (TEST_ROWS, 3))
        self.assertEqual(logvar.shape, (TEST_ROWS, 3))
        self.assertEqual(mu.dtype, np.float32)
        self.assertTrue(np.isfinite(mu).all() and np.isfinite(logvar).all())
        self.assertFalse(np.array_equal(mu, logvar))
        images = self.model.decode(mu)
        self.assertEqual(images.shape, (TEST_ROWS, SIDE * SIDE))
        self.assertTrue(((images >= 0) & (images <= 1)).all())
        samples = self.model.sample(7, seed=3)
        self.assertEqual(samples.shape, (7, SIDE * SIDE))
        self.assertTrue(np.array_equal(samples, self.model.sample(7, seed=3)))
        self.assertFalse(np.array_equal(samples, self.model.sample(7, seed=4)))
        self.assertTrue(np.array_equal(samples, self.model.sample(7, seed=3, temperature=1.0)))
        self.assertFalse(np.array_equal(samples, self.model.sample(7, seed=3, temperature=0.5)))
        elbo = self.model.elbo(self.x)
        self.assertEqual(elbo.shape, (TEST_ROWS,))
        self.assertTrue(np.isfinite(elbo).all() and (elbo < 0).all())
        iwae = self.model.iwae(self.x, 5)
        self.assertEqual(iwae.shape, (TEST_ROWS,))
        self.assertTrue(np.isfinite(iwae).all())
        self.assertAlmostEqual(self.model.elbo(self.x, mean=True), float(elbo.mean()), places=9)

    def test_encode_row_by_row_equals_the_batch(self):
        # One row runs other BLAS kernels than a batch: equal up to float rounding.
        mu, logvar = self.model.encode(self.x)
        row_mu, row_logvar = self.model.encode(self.x[5])
        self.assertEqual(row_mu.shape, (1, 3))
        np.testing.assert_allclose(row_mu[0], mu[5], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row_logvar[0], logvar[5], rtol=1e-5, atol=1e-6)

    def test_loaded_checkpoint_encodes_bitwise_alike(self):
        loaded = vae.Model.load(self.checkpoint)
        self.assertEqual(loaded.step, self.model.step)
        for a, b in zip(self.model.encode(self.x), loaded.encode(self.x)):
            self.assertTrue(np.array_equal(a.view(np.uint32), b.view(np.uint32)))
        saved = os.path.join(self.folder, "saved.safetensors")
        loaded.save(saved)
        again = vae.Model.load(saved)
        self.assertTrue(np.array_equal(again.decode(np.zeros((2, 3))), loaded.decode(np.zeros((2, 3)))))

    def test_encode_equals_the_clis_encode_bitwise(self):
        mu_path = os.path.join(self.folder, "mu.npy")
        logvar_path = os.path.join(self.folder, "logvar.npy")
        subprocess.run([os.environ["VAE_CLI"], "encode", "--checkpoint", self.checkpoint, "--split", "test",
                        "--out", mu_path, "--logvar", logvar_path, "--quiet"], check=True)
        mu, logvar = vae.Model.load(self.checkpoint).encode(self.x)
        self.assertTrue(np.array_equal(mu.view(np.uint32), np.load(mu_path).view(np.uint32)))
        self.assertTrue(np.array_equal(logvar.view(np.uint32), np.load(logvar_path).view(np.uint32)))

    def test_elbo_and_iwae_equal_the_clis_evaluation(self):
        model = vae.Model.load(self.checkpoint)
        for k in (0, 4):
            command = [os.environ["VAE_CLI"], "eval", "--checkpoint", self.checkpoint, "--split", "test"]
            if k:
                command += ["--iwae-k", str(k)]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            self.assertEqual(result["points"], TEST_ROWS)
            # The CLI prints 9 significant digits.
            if k:
                self.assertAlmostEqual(model.iwae(self.x, k, mean=True), result["log_likelihood"],
                                       delta=1e-7 * abs(result["log_likelihood"]))
            else:
                self.assertAlmostEqual(model.elbo(self.x, mean=True), result["elbo"],
                                       delta=1e-7 * abs(result["elbo"]))

    def test_keyboard_interrupt_stops_training_with_a_checkpoint(self):
        folder = os.path.join(self.folder, "interrupted")
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with self.assertRaises(KeyboardInterrupt):
                vae.train(self.settings, out_dir=folder, epochs=100000)
        finally:
            timer.cancel()
        stopped = vae.Model.load(os.path.join(folder, "checkpoint.safetensors"))
        self.assertGreater(stopped.step, 0)
        self.assertLess(stopped.step, 100000 * TRAIN_ROWS // 20)

    def test_a_bad_config_key_raises_with_the_key(self):
        settings = dict(self.settings, **{"model.no_such_key": 3})
        with self.assertRaises(vae.VaeError) as caught:
            vae.train(settings, epochs=1)
        self.assertIn("no_such_key", str(caught.exception))
        self.assertEqual(caught.exception.status, 1)  # VAE_ERROR_INVALID_ARGUMENT
        self.assertEqual(caught.exception.status_name, "invalid argument")

    def test_bad_arrays_raise(self):
        bad = self.x[:2].copy()
        bad[1, 4] = 2.0
        with self.assertRaises(vae.VaeError) as caught:
            self.model.encode(bad)
        self.assertIn("row 1, column 4", str(caught.exception))
        with self.assertRaises(ValueError):
            self.model.encode(np.zeros((2, 5), dtype=np.float32))
        with self.assertRaises(vae.VaeError):
            vae.Model.load(os.path.join(self.folder, "missing.safetensors"))


if __name__ == "__main__":
    unittest.main()
