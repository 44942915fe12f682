// Prints, for each hex-encoded key read from stdin, the partition Java's default partitioner
// (BuiltInPartitioner.partitionForKey: murmur2, positive, modulo) gives it, one per line.
// Run as a single-file program: java -cp "KAFKA_LIBS/*" JavaPartitions.java <partitions>
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.HexFormat;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;

public class JavaPartitions {
    public static void main(String[] args) throws Exception {
        int partitions = Integer.parseInt(args[0]);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String line; (line = in.readLine()) != null; ) {
            byte[] key = HexFormat.of().parseHex(line.trim());
            System.out.println(BuiltInPartitioner.partitionForKey(key, partitions));
        }
    }
}
