// The Kotlin API from Java: try-with-resources, a lambda listener, the typed exception.
// Enrols the manifest's training frames, fits ncm, prints the first query's prediction.
import edgetune.EdgetuneException;
import edgetune.FitOptions;
import edgetune.FitResult;
import edgetune.PixelFormat;
import edgetune.Prediction;
import edgetune.Session;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;

public class JavaUse {
    public static void main(String[] args) throws Exception {
        List<String> lines = Files.readAllLines(Paths.get(args[1]));
        try (Session s = new Session(args[0])) {
            String first = null;
            for (String line : lines) {
                String[] f = line.split(" ");
                byte[] px = Files.readAllBytes(Paths.get(f[7]));
                PixelFormat fmt = PixelFormat.valueOf(f[2]);
                int w = Integer.parseInt(f[3]), h = Integer.parseInt(f[4]);
                int stride = Integer.parseInt(f[5]), rot = Integer.parseInt(f[6]);
                if (f[0].equals("enrol")) {
                    s.enrol(px, fmt, w, h, stride, rot, f[1]);
                } else if (first == null) {
                    first = f[7];
                    FitResult fit = s.fit("ncm", new FitOptions(), (step, steps, loss, acc) -> true);
                    StringBuilder b = new StringBuilder("java ncm " + first);
                    for (Prediction p : s.predict(px, fmt, w, h, stride, rot, 4)) {
                        b.append(' ').append(p.getLabel()).append('=').append(p.getScore());
                    }
                    System.out.println(b);
                }
            }
            try {
                s.fit("knn");
                throw new AssertionError("no exception");
            } catch (EdgetuneException e) {
                System.out.println("java error " + e.getMessage());
            }
        }
    }
}
